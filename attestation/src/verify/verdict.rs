//! A verdict: every check of a report by name, in a fixed order, each passed, failed or
//! skipped with a sentence saying why. The names are stable identifiers (tests and the key
//! broker match on them); the label a line prints names the key kind the report used, so a
//! VLEK-signed report reads "vlek" and "asvk", not "vcek" and "ask".

use crate::report::SigningKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// Not asked for, or not reachable after an earlier failure.
    Skipped,
}

/// The checks of a verdict, in the order a verdict lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckName {
    Report,
    Ark,
    Ask,
    Vcek,
    ReportSignature,
    VcekTcb,
    ChipId,
    Measurement,
    HostData,
    ReportData,
    PolicyDebug,
    MinimumTcb,
}

impl CheckName {
    /// Every check, in verdict order.
    pub const ALL: [Self; 12] = [
        Self::Report,
        Self::Ark,
        Self::Ask,
        Self::Vcek,
        Self::ReportSignature,
        Self::VcekTcb,
        Self::ChipId,
        Self::Measurement,
        Self::HostData,
        Self::ReportData,
        Self::PolicyDebug,
        Self::MinimumTcb,
    ];

    /// The name `cloak attest verify` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Ark => "ark",
            Self::Ask => "ask",
            Self::Vcek => "vcek",
            Self::ReportSignature => "report-signature",
            Self::VcekTcb => "vcek-tcb",
            Self::ChipId => "chip-id",
            Self::Measurement => "measurement",
            Self::HostData => "host-data",
            Self::ReportData => "report-data",
            Self::PolicyDebug => "policy-debug",
            Self::MinimumTcb => "minimum-tcb",
        }
    }
}

impl std::fmt::Display for CheckName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CheckName {
    /// What a verdict line calls the check for a report signed by `key`.
    pub fn label(self, key: SigningKey) -> &'static str {
        match (self, key) {
            (Self::Ask, SigningKey::Vlek) => "asvk",
            (Self::Vcek, SigningKey::Vlek) => "vlek",
            (Self::VcekTcb, SigningKey::Vlek) => "vlek-tcb",
            _ => self.as_str(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: CheckName,
    /// The name printed: `name`'s, or the VLEK chain's (`CheckName::label`).
    pub label: &'static str,
    pub outcome: Outcome,
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = match self.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skipped => "SKIP",
        };
        write!(f, "{word} {}: {}", self.label, self.detail)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub checks: Vec<Check>,
    /// The report's fields, when it could be read.
    pub report: Option<crate::report::Report>,
    /// The product line whose layout the TCB fields were read with, once the chain said.
    pub product: Option<crate::report::Product>,
    /// The key kind the labels name (VCEK until the report says otherwise).
    key: Option<SigningKey>,
}

impl Verdict {
    /// True when no check failed and the signature checks ran.
    pub fn passed(&self) -> bool {
        let signed = self
            .checks
            .iter()
            .any(|c| c.name == CheckName::ReportSignature && c.outcome == Outcome::Pass);
        signed && self.checks.iter().all(|c| c.outcome != Outcome::Fail)
    }

    /// The first failed check.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.outcome == Outcome::Fail)
    }

    /// The report's REPORTED_TCB, read with its product line's layout.
    pub fn reported_tcb(&self) -> Option<crate::report::Tcb> {
        Some(self.report.as_ref()?.reported_tcb(self.product?))
    }

    pub(super) fn name_key(&mut self, key: SigningKey) {
        self.key = Some(key);
    }

    fn label(&self, name: CheckName) -> &'static str {
        name.label(self.key.unwrap_or(SigningKey::Vcek))
    }

    pub(super) fn record(&mut self, name: CheckName, result: Result<String, String>) -> bool {
        let (outcome, detail) = match result {
            Ok(detail) => (Outcome::Pass, detail),
            Err(detail) => (Outcome::Fail, detail),
        };
        self.checks.push(Check {
            name,
            label: self.label(name),
            outcome,
            detail,
        });
        outcome == Outcome::Pass
    }

    pub(super) fn skip(&mut self, name: CheckName, detail: &str) {
        self.checks.push(Check {
            name,
            label: self.label(name),
            outcome: Outcome::Skipped,
            detail: detail.to_owned(),
        });
    }

    /// Every check not recorded is "not reached"; the checks in verdict order. However
    /// early verification stops, the verdict names every check once.
    pub(super) fn finish(mut self) -> Self {
        for name in CheckName::ALL {
            if !self.checks.iter().any(|check| check.name == name) {
                self.skip(name, "not reached");
            }
        }
        self.checks.sort_by_key(|check| check.name);
        self
    }
}
