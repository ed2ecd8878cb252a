//! What a policy sees of a request (`input`): the request message with the field names of
//! `protocol/protos/agent.proto` (proto names, every field present, bytes as base64), with the
//! JSON the host sends inside bytes fields parsed in place so rules can look into it:
//! CreateContainerRequest's `oci_spec_json` becomes `oci` (the OCI runtime spec as the host
//! sent it), ExecProcessRequest's `process_json` becomes `process`, and CreateSandboxRequest's
//! `init_data` (checked against HOST_DATA, the policy's own source) is left out.
//! A stream the host opens is `{"container_id", "exec_id"}` under the rule of its RPC twin
//! (`ReadStdoutRequest`, `ReadStderrRequest`, `WriteStdinRequest`).

use protobuf::MessageFull;
use serde_json::Value;

/// The input for a request message.
pub fn of_message(message: &impl MessageFull) -> Value {
    let options = protobuf_json_mapping::PrintOptions {
        proto_field_name: true,
        always_output_default_values: true,
        ..Default::default()
    };
    let mut input = protobuf_json_mapping::print_to_string_with_options(message, &options)
        .ok()
        .and_then(|json| serde_json::from_str::<Value>(&json).ok())
        .unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut input {
        fields.remove("init_data");
        for (bytes_field, parsed_field) in [("oci_spec_json", "oci"), ("process_json", "process")] {
            if let Some(Value::String(encoded)) = fields.remove(bytes_field) {
                fields.insert(parsed_field.to_owned(), parsed_json(&encoded));
            }
        }
    }
    input
}

/// The input for a stdio stream the host opens.
pub fn of_stream(container_id: &str, exec_id: &str) -> Value {
    serde_json::json!({ "container_id": container_id, "exec_id": exec_id })
}

/// A base64 bytes field holding JSON, parsed; `null` when it is not JSON (the policy then sees
/// no spec, and the operation refuses it anyway).
fn parsed_json(encoded: &str) -> Value {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}
