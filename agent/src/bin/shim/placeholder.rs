//! The placeholders that lead the tries' process groups (see `shim.rs`): a process that makes
//! a new group, leads it and only waits there to be killed.
//!
//! A placeholder is made with `clone(CLONE_VM)`: unlike `fork`, it copies none of the
//! supervisor's page tables (a fork and exit of the supervisor per try was about 14% of the
//! machine's CPU in the standalone throughput benchmark). `fork` is kept as the fallback: when
//! a clone fails (logged, and forks from then on), or when `GOFLOW_SHIM_PLACEHOLDER=fork` asks
//! for it.
//!
//! A cloned placeholder shares the supervisor's memory, `errno` and every lock of libc and of
//! Rust's runtime included. So it runs on a stack of its own, which stays allocated until it
//! is reaped, and makes only system calls straight to the kernel (no libc wrapper, so no
//! `errno`). All signals are blocked around the clone, so that no handler of the supervisor's
//! runs in it before it has set every signal the supervisor handles or ignores back to the
//! default; then it takes the supervisor's mask back, as a forked one has it.

use std::ffi::{c_int, c_void};
use std::ptr::{NonNull, addr_of, addr_of_mut};

/// Signals set back to their default in a placeholder: those the supervisor ignores (a
/// signal to the group reaches the placeholder as it reaches the try's own processes), and
/// those Rust's runtime handles (stack overflows), so that no handler of the supervisor's
/// runs in it.
const DEFAULT_SIGNALS: [c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGPIPE,
    libc::SIGSEGV,
    libc::SIGBUS,
];

/// A cloned placeholder's stack: it uses a few hundred bytes (one frame, no libc).
const STACK_BYTES: usize = 16 * 1024;

/// A process leading a group for a try.
pub struct Placeholder {
    pub pid: libc::pid_t,
    /// What a cloned placeholder runs on; None for a forked one. Freed by `release` only.
    area: Option<NonNull<CloneArea>>,
}

impl Placeholder {
    /// Frees what a cloned placeholder ran on.
    ///
    /// # Safety
    /// The placeholder has been reaped (waitpid): nothing runs on its stack any more.
    pub unsafe fn release(self) {
        if let Some(area) = self.area {
            // SAFETY: made by Box::into_raw in `cloned`; the caller says it is no longer used.
            drop(unsafe { Box::from_raw(area.as_ptr()) });
        }
    }
}

/// Makes placeholders, by clone while it works.
pub struct Maker {
    cloning: bool,
    /// The supervisor's pid: a placeholder whose parent is already someone else exits.
    parent: libc::pid_t,
    /// /dev/null, kept open: the placeholder's stdin and stdout, so that it holds no end of
    /// the agent's pipes.
    null: c_int,
}

impl Maker {
    /// By clone unless `GOFLOW_SHIM_PLACEHOLDER=fork`.
    pub fn new() -> Self {
        let cloning = std::env::var_os("GOFLOW_SHIM_PLACEHOLDER").is_none_or(|method| method != "fork");
        // SAFETY: getpid and open touch no memory of ours but the path.
        let (parent, null) = unsafe {
            (
                libc::getpid(),
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC),
            )
        };
        Self {
            cloning: cloning && cfg!(any(target_arch = "x86_64", target_arch = "aarch64")),
            parent,
            null,
        }
    }

    /// A new placeholder, leading its group already. It dies with the supervisor, so an
    /// unused one never lingers.
    pub fn make(&mut self) -> Placeholder {
        if self.cloning {
            match self.cloned() {
                Ok(placeholder) => return placeholder,
                Err(err) => {
                    eprintln!("goflow-shim: clone failed ({err}): placeholders are forked from now on");
                    self.cloning = false;
                }
            }
        }
        self.forked()
    }

    fn cloned(&self) -> std::io::Result<Placeholder> {
        let area: *mut CloneArea = Box::into_raw(Box::<CloneArea>::new_uninit()).cast();
        // SAFETY: `area` is a live allocation of ours; the fields the placeholder reads are
        // written before the clone, the stack is only ever written by the placeholder. The
        // signal mask calls write into sigset_t's of ours.
        unsafe {
            addr_of_mut!((*area).parent).write(self.parent);
            addr_of_mut!((*area).null).write(self.null);
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            // The mask of now, for the placeholder to take back.
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, addr_of_mut!((*area).mask));
            let stack_top = (addr_of_mut!((*area).stack) as usize + STACK_BYTES) & !15;
            let pid = libc::clone(
                run_placeholder,
                stack_top as *mut c_void,
                libc::CLONE_VM | libc::SIGCHLD,
                area.cast(),
            );
            let clone_error = std::io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, addr_of!((*area).mask), std::ptr::null_mut());
            if pid < 0 {
                drop(Box::from_raw(area));
                return Err(clone_error);
            }
            // Also here, so the group exists before its id is handed out, whichever runs first.
            libc::setpgid(pid, pid);
            Ok(Placeholder {
                pid,
                area: NonNull::new(area),
            })
        }
    }

    fn forked(&self) -> Placeholder {
        // SAFETY: the supervisor is single-threaded, so the child may run anything; it only
        // makes async-signal-safe calls anyway.
        unsafe {
            let pid = libc::fork();
            if pid < 0 {
                eprintln!("goflow-shim: fork failed: {}", std::io::Error::last_os_error());
                std::process::exit(1);
            }
            if pid == 0 {
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != self.parent {
                    libc::_exit(0);
                }
                for signal in DEFAULT_SIGNALS {
                    libc::signal(signal, libc::SIG_DFL);
                }
                libc::dup2(self.null, 0);
                libc::dup2(self.null, 1);
                libc::close(self.null);
                loop {
                    libc::pause();
                }
            }
            libc::setpgid(pid, pid);
            Placeholder { pid, area: None }
        }
    }
}

/// What a cloned placeholder is given: written before the clone, read by the placeholder, and
/// freed only once it has been reaped.
#[repr(C)]
struct CloneArea {
    stack: [std::mem::MaybeUninit<u8>; STACK_BYTES],
    parent: libc::pid_t,
    null: c_int,
    /// The supervisor's signal mask before the clone.
    mask: libc::sigset_t,
}

/// The cloned placeholder: system calls only (see the module's documentation). Never returns.
extern "C" fn run_placeholder(area: *mut c_void) -> c_int {
    let area = area.cast::<CloneArea>();
    // SAFETY: `area` stays allocated until this process is reaped (see `Placeholder::release`);
    // its fields were written before the clone and are only read here. Each call passes the
    // kernel pointers to memory that lives as long as the call.
    unsafe {
        let parent = addr_of!((*area).parent).read();
        let null = addr_of!((*area).null).read();
        raw::syscall(libc::SYS_setpgid, [0, 0, 0, 0]);
        raw::syscall(
            libc::SYS_prctl,
            [libc::PR_SET_PDEATHSIG as usize, libc::SIGKILL as usize, 0, 0],
        );
        // The supervisor died before the line above: nobody would kill this one.
        if raw::syscall(libc::SYS_getppid, [0; 4]) != parent as isize {
            raw::exit();
        }
        // The kernel's struct sigaction with every field 0: SIG_DFL, no flags, an empty mask.
        let default = [0u64; 4];
        for signal in DEFAULT_SIGNALS {
            raw::syscall(
                libc::SYS_rt_sigaction,
                [signal as usize, default.as_ptr() as usize, 0, raw::SIGSET_BYTES],
            );
        }
        raw::syscall(libc::SYS_dup3, [null as usize, 0, 0, 0]);
        raw::syscall(libc::SYS_dup3, [null as usize, 1, 0, 0]);
        raw::syscall(libc::SYS_close, [null as usize, 0, 0, 0]);
        let mask = addr_of!((*area).mask) as usize;
        raw::syscall(
            libc::SYS_rt_sigprocmask,
            [libc::SIG_SETMASK as usize, mask, 0, raw::SIGSET_BYTES],
        );
        // Waits for the signal that ends it (every signal is at its default by now).
        loop {
            raw::syscall(libc::SYS_rt_sigsuspend, [mask, raw::SIGSET_BYTES, 0, 0]);
        }
    }
}

/// System calls without libc: the result, or -errno, and `errno` itself left alone.
mod raw {
    /// The kernel's signal set: 64 signals.
    pub const SIGSET_BYTES: usize = 8;

    /// Ends this process.
    ///
    /// # Safety
    /// Only in a placeholder.
    pub unsafe fn exit() -> ! {
        loop {
            // SAFETY: exit_group ends the calling process and touches no memory.
            unsafe { syscall(libc::SYS_exit_group, [0; 4]) };
        }
    }

    /// # Safety
    /// As the system call `number` with these arguments.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub unsafe fn syscall(number: libc::c_long, args: [usize; 4]) -> isize {
        let result: isize;
        // SAFETY: the x86-64 Linux system call convention; the kernel clobbers rcx and r11.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") number as isize => result,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        result
    }

    /// # Safety
    /// As the system call `number` with these arguments.
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    pub unsafe fn syscall(number: libc::c_long, args: [usize; 4]) -> isize {
        let result: isize;
        // SAFETY: the arm64 Linux system call convention; only x0 is written.
        unsafe {
            std::arch::asm!(
                "svc 0",
                in("x8") number,
                inlateout("x0") args[0] as isize => result,
                in("x1") args[1],
                in("x2") args[2],
                in("x3") args[3],
                options(nostack),
            );
        }
        result
    }

    /// Elsewhere placeholders are forked (see `Maker::new`); never called.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub unsafe fn syscall(_number: libc::c_long, _args: [usize; 4]) -> isize {
        unreachable!("placeholders are only cloned on x86-64 and arm64")
    }
}
