# The agent policy of a pod whose init-data carries none: every request is allowed. It suits
# pods whose host is trusted; a confidential pod brings its own policy in its init-data
# (`cloak policy generate`), which its HOST_DATA binds.
package agent_policy

default CreateSandboxRequest := true
default DestroySandboxRequest := true
default GetGuestDetailsRequest := true
default CreateContainerRequest := true
default StartContainerRequest := true
default RemoveContainerRequest := true
default ExecProcessRequest := true
default SignalProcessRequest := true
default WaitProcessRequest := true
default ListProcessesRequest := true
default PauseContainerRequest := true
default ResumeContainerRequest := true
default UpdateContainerRequest := true
default StatsContainerRequest := true
default GetOOMEventRequest := true
default WriteStdinRequest := true
default ReadStdoutRequest := true
default ReadStderrRequest := true
default CloseStdinRequest := true
default TtyWinResizeRequest := true
default UpdateInterfaceRequest := true
default UpdateRoutesRequest := true
default ListInterfacesRequest := true
default CopyFileRequest := true
default GetAttestationReportRequest := true
default PortForwardRequest := true
