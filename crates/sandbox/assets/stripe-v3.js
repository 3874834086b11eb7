/*
 * Tollgate sandbox: a stand-in for Stripe.js v3 (https://js.stripe.com/v3/), offline.
 *
 * It implements the part of the interface a payment page uses: Stripe(publishableKey),
 * stripe.elements({clientSecret}), elements.create('payment') (a card form), element.mount(),
 * element.on(), stripe.confirmPayment({elements, confirmParams: {return_url}, redirect}) and
 * stripe.retrievePaymentIntent(clientSecret). Card details go straight from this form to the
 * sandbox's /v1/payment_intents/{id}/confirm, authorised by the publishable key and the
 * intent's client secret, as Stripe.js does with real Stripe. 3-D Secure follows
 * next_action.redirect_to_url to the sandbox's authentication page.
 *
 * The API base is where this script was loaded from, minus "/js/v3/".
 */
(function () {
  'use strict';

  var script = document.currentScript;
  var API_BASE = script && script.src ? script.src.replace(/\/js\/v3\/?(\?.*)?$/, '') : '';

  function encode(value, prefix, out) {
    if (value === null || value === undefined) return out;
    if (typeof value === 'object') {
      Object.keys(value).forEach(function (k) {
        encode(value[k], prefix ? prefix + '[' + k + ']' : k, out);
      });
    } else {
      out.push(encodeURIComponent(prefix) + '=' + encodeURIComponent(String(value)));
    }
    return out;
  }

  function request(key, method, path, params) {
    var body = params ? encode(params, '', []).join('&') : null;
    var url = API_BASE + path;
    if (method === 'GET' && body) {
      url += '?' + body;
      body = null;
    }
    return fetch(url, {
      method: method,
      headers: {
        Authorization: 'Bearer ' + key,
        'Content-Type': 'application/x-www-form-urlencoded'
      },
      body: body
    }).then(function (r) {
      return r.json().then(function (json) {
        return { status: r.status, body: json };
      });
    }, function () {
      return { status: 0, body: { error: { type: 'api_connection_error', message: 'We could not reach the payment service. Check your connection and try again.' } } };
    });
  }

  function intentId(clientSecret) {
    return String(clientSecret || '').split('_secret_')[0];
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text) e.textContent = text;
    return e;
  }

  var counter = 0;

  /* The Payment Element: a card form (number, expiry, CVC) with labels and live validation. */
  function PaymentElement(elements, options) {
    this._elements = elements;
    this._options = options || {};
    this._handlers = {};
    this._root = null;
  }

  PaymentElement.prototype.on = function (event, handler) {
    (this._handlers[event] = this._handlers[event] || []).push(handler);
    return this;
  };

  PaymentElement.prototype._emit = function (event, payload) {
    (this._handlers[event] || []).forEach(function (h) { h(payload); });
  };

  PaymentElement.prototype.mount = function (target) {
    var host = typeof target === 'string' ? document.querySelector(target) : target;
    if (!host) throw new Error('Stripe sandbox: mount target not found: ' + target);
    var id = 'sbx-' + (++counter);
    var root = el('div', { class: 'sbx-payment-element', 'data-testid': 'payment-element' });
    function field(name, label, attrs) {
      var wrap = el('div', { class: 'sbx-field' });
      var lab = el('label', { for: id + '-' + name }, label);
      var input = el('input', Object.assign({ id: id + '-' + name, name: name, type: 'text', required: 'required', 'aria-invalid': 'false' }, attrs));
      wrap.appendChild(lab);
      wrap.appendChild(input);
      root.appendChild(wrap);
      return input;
    }
    this._number = field('cardnumber', 'Card number', { inputmode: 'numeric', autocomplete: 'cc-number', placeholder: '1234 1234 1234 1234', maxlength: '23' });
    var row = el('div', { class: 'sbx-row' });
    root.appendChild(row);
    this._expiry = field('exp-date', 'Expiration (MM / YY)', { inputmode: 'numeric', autocomplete: 'cc-exp', placeholder: 'MM / YY', maxlength: '7' });
    this._cvc = field('cvc', 'Security code', { inputmode: 'numeric', autocomplete: 'cc-csc', placeholder: 'CVC', maxlength: '4' });
    row.appendChild(this._expiry.parentNode);
    row.appendChild(this._cvc.parentNode);
    var self = this;
    [this._number, this._expiry, this._cvc].forEach(function (input) {
      input.addEventListener('input', function () {
        input.setAttribute('aria-invalid', 'false');
        self._emit('change', { elementType: 'payment', complete: !self._problem(), empty: false });
      });
    });
    host.appendChild(root);
    this._root = root;
    setTimeout(function () { self._emit('ready', { elementType: 'payment' }); }, 0);
    return this;
  };

  PaymentElement.prototype._card = function () {
    var number = (this._number.value || '').replace(/\D/g, '');
    var exp = (this._expiry.value || '').replace(/[^\d/]/g, '').split('/');
    var month = parseInt(exp[0], 10);
    var year = parseInt(exp[1], 10);
    if (year < 100) year += 2000;
    return { number: number, exp_month: month, exp_year: year, cvc: (this._cvc.value || '').replace(/\D/g, '') };
  };

  /* The first problem with the form, as Stripe.js phrases it, or null. */
  PaymentElement.prototype._problem = function () {
    var c = this._card();
    if (c.number.length < 12) return { field: this._number, message: 'Your card number is incomplete.', code: 'incomplete_number' };
    if (!c.exp_month || c.exp_month > 12 || !c.exp_year) return { field: this._expiry, message: "Your card's expiration date is incomplete.", code: 'incomplete_expiry' };
    if (c.cvc.length < 3) return { field: this._cvc, message: "Your card's security code is incomplete.", code: 'incomplete_cvc' };
    return null;
  };

  function Elements(stripe, options) {
    this._stripe = stripe;
    this._options = options || {};
    this._payment = null;
  }

  Elements.prototype.create = function (type, options) {
    if (type !== 'payment' && type !== 'card') {
      throw new Error('Stripe sandbox: only the "payment" element is available (asked for "' + type + '").');
    }
    this._payment = new PaymentElement(this, options);
    return this._payment;
  };

  Elements.prototype.getElement = function (type) {
    return type === 'payment' || type === 'card' ? this._payment : null;
  };

  Elements.prototype.submit = function () {
    var p = this._payment && this._payment._problem();
    if (p) {
      p.field.setAttribute('aria-invalid', 'true');
      return Promise.resolve({ error: { type: 'validation_error', code: p.code, message: p.message } });
    }
    return Promise.resolve({});
  };

  function Stripe(key, options) {
    if (!(this instanceof Stripe)) return new Stripe(key, options);
    if (!key || String(key).indexOf('pk_') !== 0) {
      throw new Error('Stripe sandbox: Stripe() needs a publishable key (pk_…).');
    }
    this._key = key;
    this._options = options || {};
  }

  Stripe.prototype.elements = function (options) {
    return new Elements(this, options);
  };

  Stripe.prototype.retrievePaymentIntent = function (clientSecret) {
    return request(this._key, 'GET', '/v1/payment_intents/' + encodeURIComponent(intentId(clientSecret)), { client_secret: clientSecret })
      .then(function (r) { return r.body.error ? { error: r.body.error } : { paymentIntent: r.body }; });
  };

  Stripe.prototype.confirmPayment = function (args) {
    args = args || {};
    var elements = args.elements;
    var params = args.confirmParams || {};
    var clientSecret = args.clientSecret || (elements && elements._options.clientSecret);
    var element = elements && elements._payment;
    if (!element || !clientSecret) {
      return Promise.resolve({ error: { type: 'validation_error', message: 'confirmPayment needs elements created with a clientSecret.' } });
    }
    var problem = element._problem();
    if (problem) {
      problem.field.setAttribute('aria-invalid', 'true');
      return Promise.resolve({ error: { type: 'validation_error', code: problem.code, message: problem.message } });
    }
    var returnUrl = params.return_url;
    if (!returnUrl && args.redirect !== 'if_required') {
      return Promise.resolve({ error: { type: 'validation_error', message: 'confirmParams.return_url is required.' } });
    }
    var body = {
      client_secret: clientSecret,
      payment_method_data: { type: 'card', card: element._card() }
    };
    if (returnUrl) body.return_url = returnUrl;
    var id = intentId(clientSecret);
    return request(this._key, 'POST', '/v1/payment_intents/' + encodeURIComponent(id) + '/confirm', body).then(function (r) {
      if (r.body.error) return { error: r.body.error };
      var pi = r.body;
      if (pi.status === 'requires_action' && pi.next_action && pi.next_action.type === 'redirect_to_url') {
        window.location.assign(pi.next_action.redirect_to_url.url);
        return new Promise(function () {});
      }
      if (args.redirect === 'if_required') return { paymentIntent: pi };
      var sep = returnUrl.indexOf('?') >= 0 ? '&' : '?';
      var status = pi.status === 'requires_payment_method' ? 'failed' : 'succeeded';
      window.location.assign(returnUrl + sep + 'payment_intent=' + encodeURIComponent(pi.id) +
        '&payment_intent_client_secret=' + encodeURIComponent(clientSecret) + '&redirect_status=' + status);
      return new Promise(function () {});
    });
  };

  window.Stripe = Stripe;
})();
