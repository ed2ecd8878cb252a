//! The runtime configuration a create runs with, from containerd's runtime options.

use std::path::PathBuf;

use containerd_shim::api::Empty;
use containerd_shim::protos::protobuf::well_known_types::any::Any;

use super::super::errors::{TaskError, TaskResult};
use cloak_host::config::Configuration;

/// The runtime configuration: the `ConfigPath` runtime option (containerd's runtime options,
/// `ctr run --runtime-config-path`), else `CLOAK_CONFIG`, else the default path. Only the
/// default path may be missing (built-in defaults apply); a named file must load.
pub(super) fn load_configuration(options: Option<&Any>) -> TaskResult<Configuration> {
    let named = options
        .and_then(config_path_option)
        .or_else(|| std::env::var_os("CLOAK_CONFIG").map(PathBuf::from));
    let path = match named {
        Some(path) => path,
        None => {
            let default = PathBuf::from(cloak_host::config::DEFAULT_CONFIG_PATH);
            if !default.exists() {
                return Ok(Configuration::default());
            }
            default
        }
    };
    Configuration::load(&path).map_err(|err| TaskError::InvalidArgument(err.to_string()))
}

/// `config_path` (field 2) of the CRI plugin's `runtimeoptions.v1.Options`, which it sends for
/// runtimes other than runc. Read as an unknown field: the message has no generated type here.
fn config_path_option(any: &Any) -> Option<PathBuf> {
    use containerd_shim::protos::protobuf::{Message, UnknownValueRef};
    if !any.type_url.ends_with("runtimeoptions.v1.Options") {
        return None;
    }
    let message = Empty::parse_from_bytes(&any.value).ok()?;
    match message.special_fields.unknown_fields().get(2)? {
        UnknownValueRef::LengthDelimited(bytes) if !bytes.is_empty() => {
            Some(PathBuf::from(String::from_utf8_lossy(bytes).into_owned()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cri_config_path_option_is_read() {
        // runtimeoptions.v1.Options { type_url = 1, config_path = 2 }
        let mut value = vec![0x0a, 1, b'x', 0x12, 8];
        value.extend_from_slice(b"/etc/c.t");
        let any = Any {
            type_url: "type.googleapis.com/runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        };
        assert_eq!(config_path_option(&any), Some(PathBuf::from("/etc/c.t")));
        let other = Any {
            type_url: "containerd.runc.v1.Options".into(),
            ..any
        };
        assert_eq!(config_path_option(&other), None);
    }
}
