//! The open-files limit: every node the coordinator holds costs it a file descriptor, and the
//! usual soft limit (1,024, systemd's default) is far below what one machine can serve.

/// (soft, hard) limit on open files.
pub fn open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // rlim_t is not u64 on every platform
    #[allow(clippy::unnecessary_cast)]
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// Raise the soft open-files limit to the hard one (which an unprivileged process may do).
/// Returns (soft limit before, soft limit now).
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = open_files_limit()?;
    // An unlimited hard limit cannot be the soft one: the kernel caps descriptors at nr_open.
    let target = match std::fs::read_to_string("/proc/sys/fs/nr_open") {
        Ok(s) => s.trim().parse().map_or(hard, |n: u64| n.min(hard)),
        Err(_) => hard,
    };
    if soft >= target {
        return Ok((soft, soft));
    }
    let lim = libc::rlimit {
        rlim_cur: target as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((soft, open_files_limit()?.0))
}

/// Whether an accept failed for lack of file descriptors (the process's or the system's).
pub fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
        let (_, hard) = open_files_limit().unwrap();
        let (_, now) = raise_open_files_limit().unwrap();
        assert_eq!(open_files_limit().unwrap(), (now, hard));
        if hard < 1 << 20 {
            assert_eq!(now, hard);
        }
    }

    #[test]
    fn running_out_of_descriptors_is_recognised() {
        assert!(is_out_of_descriptors(&std::io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!is_out_of_descriptors(&std::io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
