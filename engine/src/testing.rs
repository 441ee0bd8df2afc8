//! Child processes for tests that inherit nothing but their standard
//! streams (feature `test-support`).

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the process that `command` spawns inherit no file descriptor but
/// stdin, stdout and stderr.
///
/// Every test that spawns a process (a node, Redis, tansu) needs this.
/// librdkafka's mock cluster runs inside the test process and opens its
/// sockets without close-on-exec, so a child started after a client
/// connected to the mock held a copy of the mock's end of that connection.
/// When the mock then closed the connection (it closes every connection of
/// a broker taken down), the copy kept it open: the client saw no end and
/// waited for answers until its socket timeout (60 s). In the cluster
/// tests, a node's produce requests timed out and its consumer missed the
/// rebalance that moved its shards away.
pub fn without_inherited_fds(command: &mut Command) -> &mut Command {
    // SAFETY: the hook runs in the forked child before exec and makes one
    // system call (async-signal-safe), which only changes descriptor flags.
    // Marking the descriptors close-on-exec, rather than closing them,
    // keeps the pipe through which std reports a failed exec.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| match libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;
    use std::process::Stdio;

    use super::*;

    /// A descriptor that is not close-on-exec, as C libraries open them.
    fn inheritable_socket() -> TcpListener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_raw_fd();
        // SAFETY: clears a flag of a descriptor this test owns.
        #[allow(unsafe_code)]
        let cleared = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        assert_eq!(cleared, 0);
        listener
    }

    /// Whether a child spawned by `command` finds descriptor `fd` open.
    fn child_sees(mut command: Command, fd: i32) -> bool {
        let status =
            command.args(["-c", &format!("test -e /proc/self/fd/{fd}")]).stdin(Stdio::null()).status().unwrap();
        status.success()
    }

    #[test]
    fn a_child_inherits_no_socket_of_the_parent() {
        let socket = inheritable_socket();
        let fd = socket.as_raw_fd();
        assert!(child_sees(Command::new("sh"), fd), "a plain spawn inherits the socket (the check is blind)");
        let mut isolated = Command::new("sh");
        without_inherited_fds(&mut isolated);
        assert!(!child_sees(isolated, fd), "the socket was inherited");
    }
}
