//! The steady state's seccomp filter: once attached, the agent never again mounts, loads
//! kernel modules, changes credentials or namespaces, traces or writes another process'
//! memory, or opens files by handle (the classic escape with CAP_DAC_READ_SEARCH, which the
//! sampler keeps to list other users' /proc/PID/fd). Those calls fail with EPERM instead of
//! doing what a compromised agent would want; everything else is allowed (a deny list: the
//! agent's own needs, bpf(2), perf_event_open(2), netlink and files, are many and change).
//!
//! Applied to every thread of the process at once (SECCOMP_FILTER_FLAG_TSYNC), after
//! `PR_SET_NO_NEW_PRIVS`; x86_64 only (the syscall numbers are the x86_64 ABI's; other
//! architectures and the x32 and i386 entry points are refused wholesale by the filter).

/// The calls the steady state refuses (x86_64 numbers), by name for the log and the tests.
#[cfg(target_arch = "x86_64")]
pub const DENIED: &[(&str, libc::c_long)] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("setns", libc::SYS_setns),
    ("unshare", libc::SYS_unshare),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("syslog", libc::SYS_syslog),
    ("quotactl", libc::SYS_quotactl),
    ("setuid", libc::SYS_setuid),
    ("setgid", libc::SYS_setgid),
    ("setreuid", libc::SYS_setreuid),
    ("setregid", libc::SYS_setregid),
    ("setresuid", libc::SYS_setresuid),
    ("setresgid", libc::SYS_setresgid),
    ("setgroups", libc::SYS_setgroups),
    ("setfsuid", libc::SYS_setfsuid),
    ("setfsgid", libc::SYS_setfsgid),
    ("capset", libc::SYS_capset),
];

/// The classic BPF program: the architecture must be x86_64 and the number below the x32
/// bit, then each denied number returns EPERM; anything else is allowed.
#[cfg(target_arch = "x86_64")]
pub fn program() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // Layout: [0] load arch, [1] arch check, [2] load nr, [3] x32 check, [4..4+n] denied,
    // [4+n] allow, [5+n] deny. A jump's offset counts from the next instruction.
    let n = DENIED.len();
    let deny_at = 5 + n;
    let to_deny = |from: usize| u8::try_from(deny_at - from - 1).expect("filter under 255");
    let mut p = vec![
        ins(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        ins(JEQ_K, 0, to_deny(1), AUDIT_ARCH_X86_64),
        ins(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        ins(JGE_K, to_deny(3), 0, X32_SYSCALL_BIT),
    ];
    for (i, (_, nr)) in DENIED.iter().enumerate() {
        p.push(ins(JEQ_K, to_deny(4 + i), 0, *nr as u32));
    }
    p.push(ins(RET_K, 0, 0, RET_ALLOW));
    p.push(ins(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32));
    p
}

/// Installs the filter on every thread. Needs `PR_SET_NO_NEW_PRIVS` set first (or
/// CAP_SYS_ADMIN).
#[cfg(target_arch = "x86_64")]
pub fn install() -> std::io::Result<()> {
    const SECCOMP_SET_MODE_FILTER: libc::c_long = 1;
    const SECCOMP_FILTER_FLAG_TSYNC: libc::c_long = 1;
    let prog = program();
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).expect("short filter"),
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `prog`, alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            SECCOMP_FILTER_FLAG_TSYNC,
            &raw const fprog,
        )
    };
    match rc {
        0 => Ok(()),
        // With TSYNC, a positive value is the id of a thread that could not be synced.
        r if r > 0 => Err(std::io::Error::other(format!(
            "thread {r} could not take the filter"
        ))),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub const DENIED: &[(&str, libc::c_long)] = &[];

#[cfg(not(target_arch = "x86_64"))]
pub fn install() -> std::io::Result<()> {
    Err(std::io::Error::other(
        "the seccomp filter is written for x86_64 only",
    ))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Every jump lands inside the program, on the deny or the allow return, and each denied
    /// number has its own check.
    #[test]
    fn the_program_is_well_formed() {
        let p = program();
        assert_eq!(p.len(), DENIED.len() + 6);
        let deny = p.len() - 1;
        for (i, f) in p.iter().enumerate() {
            if f.code == 0x15 || f.code == 0x35 {
                let t = i + 1 + usize::from(f.jt);
                assert!(t == i + 1 || t == deny, "jump at {i} to {t}");
                assert!(i + 1 + usize::from(f.jf) < p.len());
            }
        }
        assert_eq!(p[deny].k, 0x0005_0000 | libc::EPERM as u32);
        assert_eq!(p[deny - 1].k, 0x7fff_0000);
        let mut nrs: Vec<u32> = p[4..deny - 1].iter().map(|f| f.k).collect();
        nrs.sort_unstable();
        nrs.dedup();
        assert_eq!(nrs.len(), DENIED.len(), "no number twice");
    }

    /// In a child process (the filter cannot be taken off): a denied call fails with EPERM,
    /// an allowed one works.
    #[test]
    fn a_denied_call_fails_with_eperm_and_others_work() {
        // SAFETY: fork in a test; the child only makes syscalls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: plain syscalls in the child.
            let code = unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || install().is_err() {
                    10
                } else if libc::unshare(libc::CLONE_NEWUTS) == 0 {
                    11
                } else if *libc::__errno_location() != libc::EPERM {
                    12
                } else if libc::getpid() <= 0 {
                    13
                } else {
                    0
                }
            };
            // SAFETY: leave the child at once, without running the test harness' exit.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child died: {status}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "see the codes in the child");
    }
}
