//! The resource policy: Rego (regorus), package `cloak.kbs`, deciding per request whether an
//! attested pod's claims earn the resource it asks for. `allow` decides; `violations`, a set
//! of strings, becomes the 403's reason. The reference values the broker was started with are
//! `data.reference`.

use cloak_kbs_protocol::resource::ResourceUri;
use serde_json::json;

use crate::appraise::Claims;
use crate::{BrokerConfig, BrokerError};

/// The default policy: every reference value must hold (configs/kbs/resource-policy.rego).
pub const DEFAULT_POLICY: &str = include_str!("../../configs/kbs/resource-policy.rego");

pub(crate) struct ResourcePolicy {
    engine: regorus::Engine,
}

impl ResourcePolicy {
    pub(crate) fn new(config: &BrokerConfig) -> Result<Self, BrokerError> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("resource-policy.rego".to_owned(), config.policy.clone())
            .map_err(|err| BrokerError::Policy(err.to_string()))?;
        let tcb = config.minimum_tcb;
        let data = json!({
            "reference": {
                "measurements": config.measurements.iter().map(|m| m.to_lowercase()).collect::<Vec<_>>(),
                "host_data": config.host_data.iter().map(|h| h.to_lowercase()).collect::<Vec<_>>(),
                "minimum_tcb": {
                    "bootloader": tcb.bootloader,
                    "tee": tcb.tee,
                    "snp": tcb.snp,
                    "microcode": tcb.microcode,
                },
            }
        });
        engine
            .add_data(regorus::Value::from_json_str(&data.to_string()).map_err(policy_error)?)
            .map_err(policy_error)?;
        let policy = Self { engine };
        // Compiles and has the rules the broker asks for.
        policy.decide(&json!({"claims": {}, "resource": {}}))?;
        Ok(policy)
    }

    /// Grants `resource` to `claims`, or says why not (403).
    pub(crate) fn grant(&self, claims: &Claims, resource: &ResourceUri) -> Result<(), BrokerError> {
        let input = json!({
            "claims": claims,
            "resource": {"repository": resource.repository, "type": resource.kind, "tag": resource.tag},
        });
        let (allow, violations) = self.decide(&input)?;
        if allow {
            return Ok(());
        }
        let reason = if violations.is_empty() {
            "the resource policy does not grant it".to_owned()
        } else {
            violations.join("; ")
        };
        Err(BrokerError::Forbidden(reason))
    }

    fn decide(&self, input: &serde_json::Value) -> Result<(bool, Vec<String>), BrokerError> {
        // A clone per decision: the engine keeps its compiled policy, the input is per request.
        let mut engine = self.engine.clone();
        engine.set_input(regorus::Value::from_json_str(&input.to_string()).map_err(policy_error)?);
        let allow = engine
            .eval_rule("data.cloak.kbs.allow".to_owned())
            .map_err(policy_error)?;
        let allow = match allow {
            regorus::Value::Bool(allow) => allow,
            regorus::Value::Undefined => false,
            other => {
                return Err(BrokerError::Policy(format!(
                    "data.cloak.kbs.allow is {other}, not a boolean"
                )))
            }
        };
        let violations = match engine.eval_rule("data.cloak.kbs.violations".to_owned()) {
            Ok(regorus::Value::Set(set)) => set
                .iter()
                .map(|value| {
                    value
                        .as_string()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|_| value.to_string())
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok((allow, violations))
    }
}

fn policy_error(err: impl std::fmt::Display) -> BrokerError {
    BrokerError::Policy(err.to_string())
}
