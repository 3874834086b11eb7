//! Connected accounts (minimal): enough to act for one with `Stripe-Account`.

use serde_json::{Value, json};

use super::{fetch, no_params};
use crate::error::{Result, StripeError};
use crate::params::Params;
use crate::state::{Account, merge_metadata};
use crate::{Ctx, empty_map};

pub fn create(ctx: &mut Ctx, mut p: Params, _: &[String]) -> Result<Value> {
    if ctx.account != ctx.state.platform_account {
        return Err(StripeError::invalid(
            "Connected accounts cannot create other accounts.",
        ));
    }
    let kind = p
        .enum_str("type", &["custom", "express", "standard"])?
        .unwrap_or_else(|| "standard".into());
    let email = p.opt_str("email")?;
    let country = p.opt_str("country")?.unwrap_or_else(|| "US".into());
    let mut metadata = empty_map();
    merge_metadata(&mut metadata, p.metadata("metadata")?);
    p.ignore(&[
        "business_type",
        "capabilities",
        "business_profile",
        "controller",
    ]);
    p.finish()?;
    let id = format!("acct_{}", crate::state::random_string(16));
    let obj = json!({
        "id": id, "object": "account", "business_profile": null, "business_type": null,
        "capabilities": {}, "charges_enabled": true, "country": country, "created": ctx.now,
        "default_currency": "usd", "details_submitted": true, "email": email,
        "metadata": metadata, "payouts_enabled": true, "type": kind,
    });
    ctx.put("account", obj.clone());
    ctx.state.accounts.insert(id.clone(), Account::new(id));
    Ok(obj)
}

pub fn list(ctx: &mut Ctx, p: Params, _: &[String]) -> Result<Value> {
    super::list(ctx, p, "account", "/v1/accounts", |_| true)
}

pub fn retrieve(ctx: &mut Ctx, p: Params, ids: &[String]) -> Result<Value> {
    no_params(p)?;
    fetch(ctx, "account", &ids[0], "account")
}

pub fn retrieve_self(ctx: &mut Ctx, p: Params, _: &[String]) -> Result<Value> {
    no_params(p)?;
    let id = ctx.account.clone();
    let platform = ctx.state.platform_account.clone();
    if id != platform
        && let Some(v) = ctx
            .state
            .accounts
            .get(&platform)
            .and_then(|a| a.get("account", &id))
    {
        return Ok(v.clone());
    }
    Ok(json!({
        "id": id, "object": "account", "business_profile": {"name": "Tollgate Sandbox"},
        "charges_enabled": true, "country": "US", "default_currency": "usd",
        "details_submitted": true, "payouts_enabled": true, "type": "standard", "metadata": {},
    }))
}
