# The default rules of a confidential pod's agent policy. `cloak policy generate` writes them,
# followed by `policy_data := {...}` (what it pinned from the pod's YAML and images), into the
# pod's init-data, which HOST_DATA binds; the host can then ask the agent for nothing but what
# the pod's author wrote. Every request the rules do not name is denied (the engine's default).
#
# What `policy_data` holds (README, "Agent policy"; written by policy-gen/src/data.rs):
#   pod:        {name: regex, namespace, hostname: regex}
#   containers: [{type: "sandbox"|"container", name, image: {names, config_digest, layers},
#                 args, env, env_patterns, cwd, user: {uid, gid, additional_gids},
#                 capabilities, no_new_privileges, readonly_rootfs,
#                 layers: [root hash...] (bottom first; empty: the shared directory),
#                 mounts: [{destination, type, source: regex, options, below}],
#                 sysctls, exec: [argv...], logs}]
#   env_patterns: regexes over "NAME=value" allowed in every container (Kubernetes' service
#                 variables)
#   copy_file_prefix: the only guest directory CopyFile may write below
#   host_reports: whether the host may ask for attestation reports (default false: a report
#                 binds data the guest chooses, such as the key a secret is wrapped to)
#   port_forward: the ports of the pod's loopback the host may reach (`kubectl port-forward`)
package agent_policy

# ------------------------------------------------------------------------------ the pod

default CreateSandboxRequest := {"allowed": false, "reason": "the sandbox is not the pod of this policy"}

CreateSandboxRequest := {"allowed": true} if {
	regex.match(policy_data.pod.hostname, input.hostname)
	count(input.storages) <= 1
	every storage in input.storages {
		shared_directory(storage)
	}
}

# The one pod-wide storage the shim sends: its virtio-fs share, at the shared directory.
shared_directory(storage) if {
	storage.driver == "virtio-fs"
	storage.mount_point == "/run/cloak/shared"
	storage.fstype == ""
	count(storage.options) == 0
	not storage.overlay_in_memory
}

default DestroySandboxRequest := true

default GetGuestDetailsRequest := true

# ------------------------------------------------------------------------------ containers

annotation(name) := object.get(input.oci, ["annotations", name], "")

container_type := annotation("io.kubernetes.cri.container-type")

container_name := annotation("io.kubernetes.cri.container-name")

# The policy entry the request claims to be (a sandbox has no container name). Claiming another
# entry gains nothing: every field is then checked against that entry.
entry_indices := [i | some i, entry in policy_data.containers; entry.type == container_type; entry.name == container_name]

default CreateContainerRequest := {"allowed": false, "reason": "the request names no container of this policy"}

CreateContainerRequest := {"allowed": false, "reason": sprintf("%s \"%s\" is not in this policy", [container_type, container_name])} if {
	container_type != ""
	count(entry_indices) == 0
}

CreateContainerRequest := {"allowed": false, "reason": concat("; ", sort(violations))} if {
	count(entry_indices) == 1
	count(violations) > 0
}

# The record carries the layers' root hashes: the agent opens the layers with these.
CreateContainerRequest := {"allowed": true, "record": {"entry": entry_indices[0], "logs": entry.logs, "layers": pinned_layers(entry)}} if {
	count(entry_indices) == 1
	count(violations) == 0
	entry := policy_data.containers[entry_indices[0]]
}

violations := container_violations(input, policy_data.containers[entry_indices[0]])

container_violations(request, entry) := (((((((image_violations(request.oci, entry)
	| args_violations(request.oci.process.args, entry))
	| process_violations(request.oci.process, entry))
	| mount_violations(object.get(request.oci, "mounts", []), entry))
	| sysctl_violations(object.get(request.oci, ["linux", "sysctl"], {}), entry))
	| rootfs_violations(request, entry))
	| pod_violations(request.oci))
	| hook_violations(request.oci))

# The image: by the name the CRI plugin records (the layers' root hashes come with verified
# root filesystems). A sandbox's image name is recorded by containerd 2 only.
image_violations(oci, entry) := {sprintf("image \"%s\" is not the pinned %v", [name, entry.image.names])} if {
	entry.type == "container"
	name := object.get(oci, ["annotations", "io.kubernetes.cri.image-name"], "")
	not name in entry.image.names
} else := {sprintf("sandbox image \"%s\" is not the pinned %v", [name, entry.image.names])} if {
	name := object.get(oci, ["annotations", "io.kubernetes.cri.podsandbox.image-name"], "")
	name != ""
	not name in entry.image.names
} else := set()

args_violations(args, entry) := {sprintf("argv %v is not the pinned %v", [args, entry.args])} if {
	args != entry.args
} else := set()

pod_violations(oci) := {sprintf("pod name \"%s\" does not match \"%s\"", [name, policy_data.pod.name])} if {
	name := object.get(oci, ["annotations", "io.kubernetes.cri.sandbox-name"], "")
	not regex.match(policy_data.pod.name, name)
} else := {sprintf("pod namespace \"%s\" is not \"%s\"", [namespace, policy_data.pod.namespace])} if {
	namespace := object.get(oci, ["annotations", "io.kubernetes.cri.sandbox-namespace"], "")
	namespace != policy_data.pod.namespace
} else := set()

hook_violations(oci) := {"OCI hooks are not allowed"} if {
	count(object.get(oci, "hooks", {})) > 0
} else := set()

# The root filesystem: the pinned layers, verified in the guest under their root hashes, in
# order; only an entry that pins none may run from the directory the shim shares.
pinned_layers(entry) := object.get(entry, "layers", [])

rootfs_violations(request, entry) := {"the root filesystem is not writable-protected as pinned"} if {
	entry.readonly_rootfs
	not object.get(request.oci, ["root", "readonly"], false)
} else := {"the root filesystem is not built from the pinned layers"} if {
	count(pinned_layers(entry)) > 0
	not layers_match(request, pinned_layers(entry))
} else := {sprintf("rootfs %v is not this container's shared directory", [request.rootfs])} if {
	count(pinned_layers(entry)) == 0
	not rootfs_shared(request)
} else := {"storages are not allowed"} if {
	count(pinned_layers(entry)) == 0
	count(request.storages) > 0
} else := set()

layers_match(request, layers) if {
	request.rootfs.driver == "layers"
	count(request.storages) == count(layers)
	every index, storage in request.storages {
		storage.driver == "erofs-verity"
		storage.source == sprintf("/run/cloak/shared/%s/layers/%d.img", [request.container_id, index])
		storage.verity_root_hash == layers[index]
	}
}

rootfs_shared(request) if {
	request.rootfs.driver == "bind"
	request.rootfs.source == concat("/", ["/run/cloak/shared", request.container_id, "rootfs"])
}

# ------------------------------------------------------------------------------ a process

# What a container's process and every exec in it must keep: env, working directory, user,
# capabilities, no_new_privileges.
process_violations(process, entry) := ((((env_violations(object.get(process, "env", []), entry)
	| cwd_violations(process, entry))
	| user_violations(object.get(process, "user", {}), entry))
	| capability_violations(object.get(process, "capabilities", {}), entry))
	| privilege_violations(process, entry))

env_name(variable) := split(variable, "=")[0]

env_allowed(variable, entry) if variable in entry.env

env_allowed(variable, entry) if {
	some pattern in array.concat(entry.env_patterns, policy_data.env_patterns)
	regex.match(pattern, variable)
}

env_violations(env, entry) := {sprintf("env %s is not allowed", [env_name(variable)]) |
	some variable in env
	not env_allowed(variable, entry)
} | {sprintf("env %s is missing", [env_name(variable)]) |
	some variable in entry.env
	not variable in env
}

cwd_violations(process, entry) := {sprintf("working directory \"%s\" is not \"%s\"", [process.cwd, entry.cwd])} if {
	process.cwd != entry.cwd
} else := set()

user_violations(user, entry) := {sprintf("uid %v is not %v", [object.get(user, "uid", 0), entry.user.uid])} if {
	object.get(user, "uid", 0) != entry.user.uid
} else := {sprintf("gid %v is not %v", [object.get(user, "gid", 0), entry.user.gid])} if {
	object.get(user, "gid", 0) != entry.user.gid
} else := {sprintf("supplementary groups %v are not among %v", [extra, entry.user.additional_gids])} if {
	# Fewer groups than pinned are fine (containerd leaves them out for some users).
	extra := {gid | some gid in object.get(user, "additionalGids", []); not gid in entry.user.additional_gids}
	count(extra) > 0
} else := set()

# Fewer capabilities than pinned are fine; one more is not, in any of the five sets.
capability_violations(capabilities, entry) := {sprintf("capability %s (%s) is not allowed", [capability, kind]) |
	some kind in ["bounding", "effective", "permitted", "inheritable", "ambient"]
	some capability in object.get(capabilities, kind, [])
	not capability in entry.capabilities
}

privilege_violations(process, entry) := {"no_new_privileges is not set as pinned"} if {
	entry.no_new_privileges
	not object.get(process, "noNewPrivileges", false)
} else := set()

# ------------------------------------------------------------------------------ mounts

mount_violations(mounts, entry) := {sprintf("mount at %s (%s) is not allowed", [mount.destination, object.get(mount, "type", "")]) |
	some mount in mounts
	not mount_allowed(mount, entry)
}

mount_allowed(mount, entry) if {
	some allowed in entry.mounts
	allowed.destination == mount.destination
	allowed.type == object.get(mount, "type", "")
	regex.match(allowed.source, object.get(mount, "source", ""))
	every option in allowed.options {
		option in object.get(mount, "options", [])
	}
}

# The shim adds a bind below a volume for each host submount whose writability differs.
mount_allowed(mount, entry) if {
	some allowed in entry.mounts
	allowed.below
	object.get(mount, "type", "") == "bind"
	startswith(mount.destination, concat("", [allowed.destination, "/"]))
	regex.match(allowed.source, object.get(mount, "source", ""))
	every option in allowed.options {
		option in object.get(mount, "options", [])
	}
}

sysctl_violations(sysctls, entry) := {sprintf("sysctl %s=%s is not allowed", [name, value]) |
	some name, value in sysctls
	object.get(entry.sysctls, name, null) != value
}

# ------------------------------------------------------------------------------ after create

admitted_entry(container_id) := policy_data.containers[data.admitted[container_id].entry]

default StartContainerRequest := false

StartContainerRequest if data.admitted[input.container_id]

default ExecProcessRequest := {"allowed": false, "reason": "the container was not admitted"}

ExecProcessRequest := {"allowed": false, "reason": sprintf("argv %v is not an exec this policy lists", [input.process.args])} if {
	entry := admitted_entry(input.container_id)
	not input.process.args in entry.exec
}

ExecProcessRequest := {"allowed": false, "reason": concat("; ", sort(exec_violations))} if {
	entry := admitted_entry(input.container_id)
	input.process.args in entry.exec
	count(exec_violations) > 0
}

ExecProcessRequest := {"allowed": true} if {
	entry := admitted_entry(input.container_id)
	input.process.args in entry.exec
	count(exec_violations) == 0
}

exec_violations := process_violations(input.process, admitted_entry(input.container_id))

# Stopping, waiting, resizing, statistics and resources: the host may always deny service.
default RemoveContainerRequest := true

default SignalProcessRequest := true

default WaitProcessRequest := true

default ListProcessesRequest := true

default PauseContainerRequest := true

default ResumeContainerRequest := true

default UpdateContainerRequest := true

default StatsContainerRequest := true

default GetOOMEventRequest := true

default CloseStdinRequest := true

default TtyWinResizeRequest := true

# ------------------------------------------------------------------------------ streams

# Input reaches the container (it is untrusted input, as network traffic is). Output leaves only
# where the pod allows logs; an exec's output is that of a command the policy lists.
default WriteStdinRequest := true

default ReadStdoutRequest := false

ReadStdoutRequest if output_allowed

default ReadStderrRequest := false

ReadStderrRequest if output_allowed

output_allowed if data.admitted[input.container_id].logs

output_allowed if {
	data.admitted[input.container_id]
	input.exec_id != ""
}

# ------------------------------------------------------------------------------ network

# Only the shapes the shim sends: a named, non-loopback interface with a real hardware address
# and no loopback address; routes that neither go to loopback nor through it.
loopback(address) if net.cidr_contains("127.0.0.0/8", address)

loopback(address) if net.cidr_contains("::1/128", address)

# Two prefixes overlap when one holds the other.
loopback_network(cidr) if net.cidr_contains("127.0.0.0/8", cidr)

loopback_network(cidr) if net.cidr_contains(cidr, "127.0.0.1")

loopback_network(cidr) if net.cidr_contains(cidr, "::1")

default UpdateInterfaceRequest := {"allowed": false, "reason": "the interface is not one the shim sends"}

UpdateInterfaceRequest := {"allowed": true} if {
	interface := input.interface
	interface.name != ""
	interface.name != "lo"
	not interface.hw_addr in {"", "00:00:00:00:00:00"}
	every address in interface.addresses {
		not loopback(address.address)
	}
}

default UpdateRoutesRequest := {"allowed": false, "reason": "a route goes to or through loopback"}

UpdateRoutesRequest := {"allowed": true} if {
	every route in input.routes {
		route_allowed(route)
	}
}

route_allowed(route) if {
	route.device != "lo"
	route.destination == "default"
	not route_gateway_loopback(route)
}

route_allowed(route) if {
	route.device != "lo"
	route.destination != "default"
	not loopback_network(route.destination)
	not route_gateway_loopback(route)
}

route_gateway_loopback(route) if {
	route.gateway != ""
	loopback(route.gateway)
}

default ListInterfacesRequest := true

# ------------------------------------------------------------------------------ files, reports

# A file below the one directory the policy names, reached without `..`; a symbolic link only
# to a relative target that stays below it.
default CopyFileRequest := {"allowed": false, "reason": "the path is not below the allowed directory"}

CopyFileRequest := {"allowed": true} if {
	startswith(input.path, policy_data.copy_file_prefix)
	not dot_dot(input.path)
	not symlink(input.file_mode)
}

CopyFileRequest := {"allowed": true} if {
	startswith(input.path, policy_data.copy_file_prefix)
	not dot_dot(input.path)
	symlink(input.file_mode)
	target := base64.decode(input.data)
	not startswith(target, "/")
	not dot_dot(target)
}

dot_dot(path) if ".." in split(path, "/")

# S_IFLNK in the file type bits (S_IFMT = 0o170000, S_IFLNK = 0o120000).
symlink(mode) if floor(mode / 4096) == 10

default GetAttestationReportRequest := {"allowed": false, "reason": "the host may not choose a report's data in this pod"}

GetAttestationReportRequest := {"allowed": true} if policy_data.host_reports

# ------------------------------------------------------------------------------ port-forward

# A service on the pod's loopback trusts its callers to be the pod's own: the host reaches only
# the ports the pod's author named (`cloak policy generate --allow-port-forward`).
default PortForwardRequest := {"allowed": false, "reason": "the host may not port-forward to this port"}

PortForwardRequest := {"allowed": true} if input.port in object.get(policy_data, "port_forward", [])
