# The default resource policy of `cloak kbs`: a resource is released only to a pod whose
# verified report shows a launch measurement among the reference values, a HOST_DATA (the
# digest of its init-data, checked against the init-data it sent) among those allowed, no
# debug policy bit, and a TCB at least the minimum. The broker has already checked the
# report's signature and chain, the nonce and the REPORT_DATA binding before this runs.
#
# input.claims:   the verified report (measurement, host_data, debug, tcb, simulated, ...)
# input.resource: {repository, type, tag} asked for
# data.reference: {measurements, host_data, minimum_tcb} the broker was started with
package cloak.kbs

import rego.v1

default allow := false

allow if count(violations) == 0

violations contains msg if {
	not input.claims.measurement in data.reference.measurements
	msg := sprintf("launch measurement %s is not among the %d reference values", [input.claims.measurement, count(data.reference.measurements)])
}

violations contains msg if {
	not input.claims.host_data in data.reference.host_data
	msg := sprintf("HOST_DATA %s (the pod's init-data) is not one this broker serves", [input.claims.host_data])
}

violations contains "the guest policy allows debugging (its memory is readable by the host)" if {
	input.claims.debug
}

violations contains msg if {
	some component in ["bootloader", "tee", "snp", "microcode"]
	input.claims.tcb[component] < data.reference.minimum_tcb[component]
	msg := sprintf("reported TCB %s SPL %d is below the minimum %d", [component, input.claims.tcb[component], data.reference.minimum_tcb[component]])
}
