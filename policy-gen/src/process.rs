//! A container's process as kubelet and the CRI plugin will make it: argv from the pod's
//! command/args and the image's Entrypoint/Cmd, env from the image and the pod with kubelet's
//! `$(VAR)` expansion, working directory, user and groups from the security context or the
//! image's user (resolved in the image's /etc/passwd and /etc/group), and capabilities.

use std::collections::BTreeMap;

use crate::data::User;
use crate::image::Image;
use crate::workload::{Container, PodSecurityContext};
use crate::GenerateError;

/// The CRI plugin's default capabilities (containerd's default spec), in its order.
pub(crate) const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The service variables kubelet injects (`<SVC>_SERVICE_HOST`, `<SVC>_PORT_80_TCP_ADDR`...).
pub(crate) const SERVICE_ENV_PATTERN: &str =
    "^[A-Z_][A-Z0-9_]*_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)=.*$";

fn is_service_variable(name: &str) -> bool {
    let suffixes = [
        "_SERVICE_HOST",
        "_SERVICE_PORT",
        "_PORT",
        "_TCP",
        "_UDP",
        "_ADDR",
        "_PROTO",
    ];
    name.contains("_SERVICE_") || suffixes.iter().any(|suffix| name.ends_with(suffix))
}

#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) env_patterns: Vec<String>,
    pub(crate) cwd: String,
    pub(crate) user: User,
}

/// What a variable expands to: a value, or one known only when the pod runs.
type Known = BTreeMap<String, Option<String>>;

/// kubelet's `$(VAR)` expansion: `$$` is `$`, a defined variable its value, an undefined one
/// left as written; `None` when the text uses a value known only at run time.
fn expand(text: &str, known: &Known) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(reference) = after.strip_prefix('(') {
            match reference.find(')') {
                Some(end) => {
                    let name = &reference[..end];
                    match known.get(name) {
                        Some(Some(value)) => out.push_str(value),
                        Some(None) => return None,
                        None if is_service_variable(name) => return None,
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &reference[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = reference;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Some(out)
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Sets `name=value` in `env`, replacing an earlier value (containerd's order: image first).
fn set_env(env: &mut Vec<String>, name: &str, value: &str) {
    let prefix = format!("{name}=");
    env.retain(|variable| !variable.starts_with(&prefix));
    env.push(format!("{name}={value}"));
}

/// The container's process; `hostname` is the regex of the pod's hostname.
pub(crate) fn resolve(
    container: &Container,
    image: &Image,
    pod: Option<&PodSecurityContext>,
    hostname: &str,
) -> Result<Process, GenerateError> {
    let invalid = |reason: String| GenerateError::Container {
        container: container.name.clone(),
        reason,
    };
    if container.env_from.is_some() {
        return Err(invalid(
            "envFrom is not supported: its variables are not known when the policy is written; list them under env".into(),
        ));
    }
    let mut env = image.config.env.clone().unwrap_or_default();
    let mut env_patterns = vec![format!("^HOSTNAME={}$", hostname.trim_matches(['^', '$']))];
    let mut known = Known::new();
    for variable in &container.env {
        let value = match (&variable.value, &variable.value_from) {
            (_, Some(_)) => None,
            (Some(value), None) => expand(value, &known),
            (None, None) => Some(String::new()),
        };
        match &value {
            Some(value) => set_env(&mut env, &variable.name, value),
            None => {
                let prefix = format!("{}=", variable.name);
                env.retain(|existing| !existing.starts_with(&prefix));
                env_patterns.push(format!("^{}=.*$", regex_escape(&variable.name)));
            }
        }
        known.insert(variable.name.clone(), value);
    }
    let expand_all = |words: &[String]| -> Result<Vec<String>, GenerateError> {
        words
            .iter()
            .map(|word| {
                expand(word, &known).ok_or_else(|| {
                    invalid(format!(
                        "{word:?} uses a variable whose value is known only when the pod runs"
                    ))
                })
            })
            .collect()
    };
    let (command, args) = (
        expand_all(&container.command)?,
        expand_all(&container.args)?,
    );
    let entrypoint = image.config.entrypoint.clone().unwrap_or_default();
    let cmd = image.config.cmd.clone().unwrap_or_default();
    let argv = match (command.is_empty(), args.is_empty()) {
        (false, _) => [command, args].concat(),
        (true, false) => [entrypoint, args].concat(),
        (true, true) => [entrypoint, cmd].concat(),
    };
    if argv.is_empty() {
        return Err(invalid(
            "neither the pod nor the image names a command".into(),
        ));
    }
    let security = container.security_context.as_ref();
    let user = user_of(
        image,
        security
            .and_then(|s| s.run_as_user)
            .or(pod.and_then(|p| p.run_as_user)),
        security
            .and_then(|s| s.run_as_group)
            .or(pod.and_then(|p| p.run_as_group)),
        pod,
        true,
    )
    .map_err(invalid)?;
    let cwd = container
        .working_dir
        .clone()
        .or_else(|| image.config.working_dir.clone())
        .filter(|dir| !dir.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    Ok(Process {
        args: argv,
        env,
        env_patterns,
        cwd,
        user,
    })
}

/// The sandbox's process: its image's, as the pod's security context runs it.
pub(crate) fn resolve_sandbox(
    image: &Image,
    pod: Option<&PodSecurityContext>,
) -> Result<Process, GenerateError> {
    let invalid = |reason: String| GenerateError::Container {
        container: "the sandbox".into(),
        reason,
    };
    let entrypoint = image.config.entrypoint.clone().unwrap_or_default();
    let args = [entrypoint, image.config.cmd.clone().unwrap_or_default()].concat();
    if args.is_empty() {
        return Err(invalid(format!(
            "its image {} names no command",
            image.name
        )));
    }
    let user = user_of(
        image,
        pod.and_then(|p| p.run_as_user),
        pod.and_then(|p| p.run_as_group),
        pod,
        false,
    )
    .map_err(invalid)?;
    Ok(Process {
        args,
        env: image.config.env.clone().unwrap_or_default(),
        env_patterns: Vec::new(),
        cwd: image
            .config
            .working_dir
            .clone()
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "/".to_owned()),
        user,
    })
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

fn passwd_entries(passwd: &str) -> Vec<PasswdEntry> {
    passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: (*fields.first()?).to_owned(),
                uid: fields.get(2)?.parse().ok()?,
                gid: fields.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

/// `(name, gid, members)` of each /etc/group line.
fn group_entries(group: &str) -> Vec<(String, u32, Vec<String>)> {
    group
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let members = fields
                .get(3)
                .map(|list| {
                    list.split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            Some((
                (*fields.first()?).to_owned(),
                fields.get(2)?.parse().ok()?,
                members,
            ))
        })
        .collect()
}

/// containerd's user resolution: the security context's ids, else the image's `User`
/// (`name`, `uid`, `name:group`, `uid:gid`) looked up in the image; supplementary groups are
/// the primary group, the groups naming the user, the pod's supplemental groups and fsGroup.
fn user_of(
    image: &Image,
    run_as_user: Option<u32>,
    run_as_group: Option<u32>,
    pod: Option<&PodSecurityContext>,
    member_groups: bool,
) -> Result<User, String> {
    let users = passwd_entries(&image.passwd);
    let groups = group_entries(&image.group);
    let image_user = image.config.user.clone().unwrap_or_default();
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((user, group)) => (user.to_owned(), Some(group.to_owned())),
        None => (image_user.clone(), None),
    };
    let entry = |uid: u32| users.iter().find(|entry| entry.uid == uid);
    let uid = match run_as_user {
        Some(uid) => uid,
        None if user_part.is_empty() => 0,
        None => match user_part.parse::<u32>() {
            Ok(uid) => uid,
            Err(_) => users
                .iter()
                .find(|entry| entry.name == user_part)
                .map(|entry| entry.uid)
                .ok_or_else(|| format!("the image's user {user_part} is not in its /etc/passwd"))?,
        },
    };
    let gid = match (run_as_group, &group_part) {
        (Some(gid), _) => gid,
        (None, Some(group)) if run_as_user.is_none() => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|(name, _, _)| name == group)
                .map(|(_, gid, _)| *gid)
                .ok_or_else(|| format!("the image's group {group} is not in its /etc/group"))?,
        },
        _ => entry(uid).map(|entry| entry.gid).unwrap_or(0),
    };
    let mut additional = vec![gid];
    if member_groups {
        if let Some(name) = entry(uid).map(|entry| entry.name.clone()) {
            for (_, group_gid, members) in &groups {
                if members.contains(&name) {
                    additional.push(*group_gid);
                }
            }
        }
    }
    if let Some(pod) = pod {
        additional.extend(&pod.supplemental_groups);
        additional.extend(pod.fs_group);
    }
    additional.sort_unstable();
    additional.dedup();
    Ok(User {
        uid,
        gid,
        additional_gids: additional,
    })
}

/// The capabilities after the container's `add` and `drop` (names with or without `CAP_`).
pub(crate) fn capabilities(container: &Container) -> Result<Vec<String>, GenerateError> {
    let full = |name: &str| {
        let upper = name.to_ascii_uppercase();
        if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        }
    };
    let mut set: Vec<String> = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    let Some(requested) = container
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
    else {
        return Ok(set);
    };
    if requested.add.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
        return Err(GenerateError::Container {
            container: container.name.clone(),
            reason: "adding ALL capabilities is as privileged, which a confidential pod refuses"
                .into(),
        });
    }
    if requested.drop.iter().any(|c| c.eq_ignore_ascii_case("ALL")) {
        set.clear();
    }
    let dropped: Vec<String> = requested.drop.iter().map(|c| full(c)).collect();
    set.retain(|c| !dropped.contains(c));
    for added in &requested.add {
        let added = full(added);
        if !set.contains(&added) {
            set.push(added);
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_expansion() {
        let mut known = Known::new();
        known.insert("A".into(), Some("x".into()));
        known.insert("SECRET".into(), None);
        assert_eq!(
            expand("$(A)-$$(A)-$(B)-$(", &known).as_deref(),
            Some("x-$(A)-$(B)-$(")
        );
        assert_eq!(expand("$(SECRET)", &known), None);
        assert_eq!(expand("$(DB_SERVICE_HOST)", &known), None);
    }
}
