// The hosted payment page: mounts Stripe's Payment Element and confirms the payment.
// Configuration comes from data attributes (no inline script, so the CSP can forbid it).
(function () {
  'use strict';
  var root = document.getElementById('pay');
  var form = document.getElementById('payment-form');
  var button = document.getElementById('submit');
  var message = document.getElementById('message');
  var stripe = Stripe(root.getAttribute('data-publishable-key'));
  var elements = stripe.elements({ clientSecret: root.getAttribute('data-client-secret') });
  var element = elements.create('payment');
  element.mount('#payment-element');
  element.on('change', function () { message.textContent = ''; });
  form.addEventListener('submit', function (event) {
    event.preventDefault();
    button.disabled = true;
    message.textContent = '';
    stripe.confirmPayment({
      elements: elements,
      confirmParams: { return_url: root.getAttribute('data-return-url') }
    }).then(function (result) {
      // Only errors come back here: on success the browser is on its way to return_url.
      if (result && result.error) {
        message.textContent = result.error.message || 'The payment could not be completed.';
        button.disabled = false;
        button.focus();
      }
    });
  });
})();
