//! Agent settings from the kernel command line (`cloak.<key>=<value>`): the only channel the
//! host has into the guest before vsock is up, and one that is measured under SNP.

/// Settings the host passes on the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AgentSettings {
    /// `tracing` filter for the agent's console log (`cloak.log=debug`).
    pub log_level: String,
    /// vsock port the agent serves ttrpc on (`cloak.port=`).
    pub port: u32,
    /// Host vsock port told "ready" once serving; 0 disables it (`cloak.ready_port=`).
    pub ready_port: u32,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            log_level: "info".to_owned(),
            port: cloak_protocol::AGENT_VSOCK_PORT,
            ready_port: cloak_protocol::READY_VSOCK_PORT,
        }
    }
}

impl AgentSettings {
    pub(crate) fn from_proc_cmdline() -> Self {
        // Without /proc (an agent started outside a VM, say) the defaults apply.
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        Self::parse(&cmdline)
    }

    pub(crate) fn parse(cmdline: &str) -> Self {
        let mut settings = Self::default();
        for word in cmdline.split_whitespace() {
            let Some((key, value)) = word
                .strip_prefix("cloak.")
                .and_then(|kv| kv.split_once('='))
            else {
                continue;
            };
            match key {
                "log" => settings.log_level = value.to_owned(),
                "port" => settings.port = value.parse().unwrap_or(settings.port),
                "ready_port" => settings.ready_port = value.parse().unwrap_or(settings.ready_port),
                _ => {}
            }
        }
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cloak_keys_and_ignores_the_rest() {
        let settings = AgentSettings::parse(
            "console=ttyS0 cloak.log=debug quiet cloak.ready_port=2000 cloak.tee=sim cloak.x=1",
        );
        assert_eq!(settings.log_level, "debug");
        assert_eq!(settings.ready_port, 2000);
        assert_eq!(settings.port, cloak_protocol::AGENT_VSOCK_PORT);
    }

    #[test]
    fn bad_numbers_keep_defaults() {
        let settings = AgentSettings::parse("cloak.port=abc cloak.ready_port=-1");
        assert_eq!(settings, AgentSettings::default());
    }
}
