"""The sandboxed interpreter's child program (see `orchestra.tools.code_interpreter`).

Run by the tool as `python -I -B -u sandbox_child.py WORKDIR CPU_S MEMORY_BYTES FILE_BYTES
CGROUP` (CGROUP: a pids cgroup to join, or "")
with the model's code on stdin; only the standard library is imported (`-I`: no site
packages, no PYTHON* variables, no script folder on sys.path). Order matters: limits and
namespaces need privileges and ctypes, which the audit hook (installed last) then forbids.
This file is never imported by the package; it is only ever the child's `__main__`.
"""

import ctypes, linecache, os, re, resource, signal, struct, subprocess, sys, traceback, types

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWNET = 0x20000, 0x8000000, 0x10000000, 0x40000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
MS_NOSUID, MS_NODEV, MS_NOEXEC, MNT_DETACH = 2, 4, 8, 2
SANDBOX_ROOT_PREFIX = "orchestra_sandboxes_"   # code_interpreter.sandbox_root's folder
SHM_OPTIONS = b"size=16m,nr_inodes=256,mode=1777"
SAFE_DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8),
                "urandom": (1, 9)}   # name: (major, minor) of the char device
KEPT_MOUNT_FLAGS = (os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_NOATIME
                    | os.ST_NODIRATIME | os.ST_RELATIME)
MAX_OPEN_FILES = 256
MAX_PENDING_SIGNALS = 64
WORKDIR_FILES = 2               # the working directory's tmpfs holds this many largest files
NOBODY = 65534                  # the unprivileged uid/gid a root-started child runs as
MAX_TASKS = 64                  # RLIMIT_NPROC once unprivileged (counts the uid's threads)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PROCESS_EVENTS = frozenset({"os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
                            "os.system", "subprocess.Popen"})
NETWORK_EVENTS = frozenset({"socket.bind", "socket.connect", "socket.sendmsg", "socket.sendto",
                            "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
                            "socket.getnameinfo", "socket.sethostname"})
HARMLESS_CTYPES_EVENTS = frozenset({"ctypes.addressof", "ctypes.create_string_buffer",
                                    "ctypes.create_unicode_buffer", "ctypes.get_errno",
                                    "ctypes.set_errno"})
UNAUDITED_MODULES = ("_posixsubprocess", "posix", "_signal")
TAMPER_EVENTS = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents"})
# seccomp (x86_64 numbers, checked against the kernel headers in the tests).
SYSCALLS = {"clone": 56, "clone3": 435, "socketpair": 53, "kill": 62, "tgkill": 234, "fcntl": 72,
            "ioctl": 16, "setpriority": 141, "prlimit64": 302, "sched_setaffinity": 203,
            "sched_setparam": 142, "sched_setscheduler": 144, "sched_setattr": 314}
REFUSED_SYSCALLS = {   # processes, other processes, namespaces/mounts, kernel state
    "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "ptrace": 101,
    "process_vm_readv": 310, "process_vm_writev": 311, "process_madvise": 440, "kcmp": 312,
    "process_mrelease": 448, "migrate_pages": 256, "move_pages": 279, "ioprio_set": 251,
    "tkill": 200, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "pidfd_open": 434,
    "pidfd_send_signal": 424, "pidfd_getfd": 438, "memfd_create": 319, "memfd_secret": 447,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "bpf": 321, "perf_event_open": 298, "mount": 165, "umount2": 166, "pivot_root": 155,
    "chroot": 161, "unshare": 272, "setns": 308, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "mknod": 133, "mknodat": 259,
    "keyctl": 250, "add_key": 248, "request_key": 249, "init_module": 175,
    "finit_module": 313, "delete_module": 176, "kexec_load": 246, "kexec_file_load": 320,
    "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "quotactl": 179,
    "syslog": 103, "settimeofday": 164, "clock_settime": 227, "adjtimex": 159,
    "clock_adjtime": 305, "sethostname": 170, "setdomainname": 171, "iopl": 172,
    "ioperm": 173, "vhangup": 153, "lookup_dcookie": 212, "fanotify_init": 300,
    "socket": 41,   # AF_UNIX too: filesystem sockets (Docker's, syslog's) cross namespaces
    # SysV IPC and POSIX message queues: the host's where there is no IPC namespace
    "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "semget": 64, "semop": 65,
    "semctl": 66, "semtimedop": 220, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
    "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243,
    "mq_notify": 244, "mq_getsetattr": 245,
    # machine-wide AIO contexts (fs.aio-max-nr); per-user inotify instances and watches
    "io_setup": 206, "io_destroy": 207, "io_getevents": 208, "io_submit": 209,
    "io_cancel": 210, "io_pgetevents": 333,
    "inotify_init": 253, "inotify_init1": 294, "quotactl_fd": 443, "open_tree_attr": 467,
}
# fcntl commands that make the kernel signal an fd's "owner", any process the uid may
# signal (F_SETOWN, F_SETSIG, F_SETOWN_EX), and F_SETLEASE, which stalls the host's opens of
# a file; ioctl FIOSETOWN, SIOCSPGRP (owners), TIOCSTI, TIOCLINUX (terminal input), the
# loop device's and loop-control's setters and /dev/userfaultfd's USERFAULTFD_IOC_NEW.
SIGNAL_OWNER_FCNTLS, REFUSED_FCNTLS = (8, 10, 15), (8, 10, 15, 1024)
SIGNAL_OWNER_IOCTLS = (0x8901, 0x8902)
REFUSED_IOCTLS = (*SIGNAL_OWNER_IOCTLS, 0x5412, 0x541C, 0xAA00, 0x4C00, 0x4C01, 0x4C02, 0x4C04,
                  0x4C06, 0x4C07, 0x4C08, 0x4C09, 0x4C0A, 0x4C80, 0x4C81, 0x4C82)
SOCK_STREAM_TYPES = (1, 1 | 0x800, 1 | 0x80000, 1 | 0x800 | 0x80000)   # NONBLOCK, CLOEXEC
NAMESPACE_CLONE_FLAGS = 0x7E020000
AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, CLONE_THREAD, AF_UNIX = 0xC000003E, 0x40000000, 0x10000, 1
EPERM, ENOSYS, PRIO_PROCESS = 1, 38, 0
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PR_SET_DUMPABLE = 38, 22, 2, 4
SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_ERRNO, SECCOMP_RET_ALLOW = 0x80000000, 0x50000, 0x7FFF0000
BPF_LD_ABS, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JSET, BPF_RET = 0x20, 0x05, 0x15, 0x35, 0x45, 0x06
# Landlock: its syscalls, and the write rights handled (right: the ABI version that has it):
# WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_CHAR ... MAKE_SYM, REFER (2), TRUNCATE (3).
LANDLOCK_CREATE_RULESET, LANDLOCK_ADD_RULE, LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION, LANDLOCK_RULE_PATH_BENEATH = 1, 1
LANDLOCK_WRITE_RIGHTS = {1 << 1: 1, **{1 << bit: 1 for bit in range(4, 13)}, 1 << 13: 2,
                         1 << 14: 3}
LANDLOCK_FILE_RIGHTS = 1 << 1 | 1 << 14        # the rights a rule on a file (not a folder) takes
# event -> (index of a path argument, index of the dir_fd it is relative to, or None), ...
PATH_EVENTS = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
    "os.rename": ((0, 2), (1, 3)), "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),),
    "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.utime": ((0, 3),),
    "os.truncate": ((0, None),), "os.mkfifo": ((0, 2),), "os.mknod": ((0, 3),),
    "os.setxattr": ((0, None),), "os.removexattr": ((0, None),), "shutil.rmtree": ((0, 1),),
}


def join_cgroup(path):
  """Moves this process into the pids cgroup `path` the tool made for the call (its cap on
  tasks); nothing when there is none or it cannot."""
  if path:
    try:
      with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
    except OSError:
      pass


def set_limits(cpu_s, memory_bytes, file_bytes):
  """Kernel-enforced caps on CPU time, address space, file size, core dumps (none: not
  dumpable), open files and queued signals (counted per user: uid 0's queue is every root
  process's)."""
  for kind, soft, hard in [(resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
                           (resource.RLIMIT_AS, memory_bytes, memory_bytes),
                           (resource.RLIMIT_FSIZE, file_bytes, file_bytes),
                           (resource.RLIMIT_CORE, 0, 0),
                           (resource.RLIMIT_NOFILE, MAX_OPEN_FILES, MAX_OPEN_FILES),
                           (resource.RLIMIT_SIGPENDING, MAX_PENDING_SIGNALS,
                            MAX_PENDING_SIGNALS)]:
    resource.setrlimit(kind, (soft, hard))
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # an oversized write raises OSError instead
  # No core dump at all: a piped core_pattern (apport, systemd-coredump) ignores RLIMIT_CORE
  # and would hand a crashed child's memory to a root helper.
  ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def isolate(workdir, workdir_bytes):
  """Enters new namespaces where the kernel allows; each failure just skips that layer.
  `workdir_bytes` caps the working directory's tmpfs (`own_working_folder`)."""
  libc = ctypes.CDLL(None, use_errno=True)
  if libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC) == 0:   # needs CAP_SYS_ADMIN
    read_only_except(libc, workdir, workdir_bytes)
    drop_root(workdir)
    libc.unshare(CLONE_NEWUSER)   # no capabilities over the host from here on
  else:
    drop_root(workdir)
    libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC)


def drop_root(workdir):
  """As root: hands `workdir` to `NOBODY` and becomes it, for good (real, effective and
  saved ids, no groups). A user namespace alone keeps the kernel uid 0, with which the
  child could signal every root process (`pidfd_send_signal` is not audited) and write
  device nodes; as nobody it can do neither, nor read root's files. Then caps the tasks
  nobody may run (`MAX_TASKS`: a fork bomb's ceiling). Nothing is dropped when not root, or
  when nobody could not reach the working directory or read the standard library (a
  folder on the way closed to others, as for a Python installed under /root)."""
  stdlib = os.path.dirname(os.__file__)
  if (os.geteuid() != 0 or not others_can_enter(os.path.dirname(workdir))
      or not others_can_enter(stdlib)):
    return
  os.chown(workdir, NOBODY, NOBODY)
  os.setgroups([])
  os.setresgid(NOBODY, NOBODY, NOBODY)
  os.setresuid(NOBODY, NOBODY, NOBODY)
  resource.setrlimit(resource.RLIMIT_NPROC, (MAX_TASKS, MAX_TASKS))


def others_can_enter(folder):
  """Whether `folder` and every folder above it let other users through (o+x)."""
  while True:
    if not os.stat(folder).st_mode & 0o001:
      return False
    if folder == os.path.dirname(folder):
      return True
    folder = os.path.dirname(folder)


def mount(libc, source, target, flags, fstype=None, options=None):
  """mount(2); whether it succeeded."""
  libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                         ctypes.c_void_p]
  return libc.mount(source and os.fsencode(source), os.fsencode(target), fstype, flags,
                    options) == 0


def read_only_except(libc, workdir, workdir_bytes):
  """Remounts every mount read-only and without devices in this (now private) mount
  namespace, except `workdir` (`own_working_folder`) and a replaced /dev (`private_dev`)."""
  if not mount(libc, None, "/", MS_REC | MS_PRIVATE):
    return   # without private propagation, changes could leak to the host: touch nothing
  if not own_working_folder(libc, workdir, workdir_bytes):
    return
  replaced_dev = not (workdir + "/").startswith("/dev/") and private_dev(libc)
  for target in mount_points():
    if target == workdir or (replaced_dev and (target + "/").startswith("/dev/")):
      continue
    try:
      kept = os.statvfs(target).f_flag & KEPT_MOUNT_FLAGS
    except OSError:
      continue
    mount(libc, None, target, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NODEV | kept)
  os.chdir(workdir)   # the old cwd still points into the underlying, now read-only, mount


def own_working_folder(libc, workdir, size_bytes):
  """Mounts a tmpfs of its own at `workdir` (`size_bytes`, 4096 inodes; no devices, setuid
  or exec): the code's files never reach the host's disk (no setuid file for the host's
  users to run, no disk to fill, no deep tree for the parent to remove) and go with the
  namespace. When `workdir`'s folder is the tool's `orchestra_sandboxes_<uid>`, an empty
  tmpfs hides that folder first: concurrent calls' working directories beside it
  (readable, lockable: one stalled another's sqlite). Whether it worked (a failure undoes
  the hiding tmpfs)."""
  parent = os.path.dirname(workdir)
  flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
  hidden = (os.path.basename(parent).startswith(SANDBOX_ROOT_PREFIX)
            and mount(libc, "tmpfs", parent, flags, b"tmpfs", b"size=64k,nr_inodes=16,mode=755"))
  if hidden:
    os.mkdir(workdir)
  options = f"size={size_bytes},nr_inodes=4096,mode=700".encode()
  if mount(libc, "tmpfs", workdir, flags, b"tmpfs", options):
    return True
  if hidden:
    libc.umount2(os.fsencode(parent), MNT_DETACH)
  return False


def private_dev(libc):
  """Replaces /dev by a read-only tmpfs holding only the harmless devices (`SAFE_DEVICES`,
  bound from the host's: a node made inside a user namespace would not open), the
  /proc/self/fd links and a 16 MB /dev/shm of its own (POSIX semaphores: thread pools). A
  device node opens for writing under a read-only mount, and the host's /dev has the kernel
  log, loop devices, terminals (TIOCSTI) and disks, root-only but for uid 0. Whether /dev
  was replaced (a failure leaves the host's, to be remounted without devices)."""
  held = {name: os.open(f"/dev/{name}", os.O_PATH | os.O_CLOEXEC)
          for name in SAFE_DEVICES if os.path.exists(f"/dev/{name}")}
  flags = MS_NOSUID | MS_NOEXEC
  try:
    if not mount(libc, "tmpfs", "/dev", flags, b"tmpfs", b"size=64k,nr_inodes=64,mode=755"):
      return False
    try:
      for name, fd in held.items():
        os.close(os.open(f"/dev/{name}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        if not (mount(libc, f"/proc/self/fd/{fd}", f"/dev/{name}", MS_BIND)
                and mount(libc, None, f"/dev/{name}", MS_BIND | MS_REMOUNT | MS_RDONLY | flags)):
          raise OSError(f"cannot bind /dev/{name}")   # read-only: no chmod of the host's
      for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                           ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"/dev/{name}")
      os.mkdir("/dev/shm")
      if not (mount(libc, "tmpfs", "/dev/shm", flags | MS_NODEV, b"tmpfs", SHM_OPTIONS)
              and mount(libc, None, "/dev", MS_REMOUNT | MS_RDONLY | flags)):
        raise OSError("cannot mount /dev/shm or remount /dev")
    except OSError:
      libc.umount2(b"/dev", MNT_DETACH)
      return False
    return True
  finally:
    for fd in held.values():
      os.close(fd)


def mount_points():
  """Mount points listed in /proc/self/mountinfo, octal escapes decoded."""
  with open("/proc/self/mountinfo", "rb") as f:
    fields = [line.split()[4] for line in f]
  return [os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), field))
          for field in fields]


def refuse_unaudited_calls():
  """Replaces what CPython does not audit: `_posixsubprocess.fork_exec` (its re-import, under
  any name, is refused by the hook), the pidfd calls that signal any process the uid may
  signal, `memfd_create`, whose unmapped pages escape RLIMIT_AS, and the priority and
  scheduling calls, which reach any process of the uid (kept for this process)."""
  import _posixsubprocess, _signal, posix
  own_pid = os.getpid()
  def refusing(what):
    def refuse(*args, **kwargs):
      raise PermissionError(f"blocked: {what} is not allowed")
    return refuse
  def own_process_only(call, pid_index, which_index=None):
    def guarded(*args):
      if args[pid_index] not in (0, own_pid) or (which_index is not None
                                                 and args[which_index] != os.PRIO_PROCESS):
        raise PermissionError("blocked: changing other processes is not allowed")
      return call(*args)
    return guarded
  _posixsubprocess.fork_exec = subprocess._fork_exec = refusing("creating processes")
  for module in (os, posix):
    for name in ("pidfd_open", "memfd_create"):
      if hasattr(module, name):
        setattr(module, name, refusing(f"os.{name}"))
    for name, pid_index, which_index in (("setpriority", 1, 0), ("sched_setaffinity", 0, None),
                                         ("sched_setparam", 0, None),
                                         ("sched_setscheduler", 0, None)):
      if hasattr(module, name):
        setattr(module, name, own_process_only(getattr(module, name), pid_index, which_index))
  for module in (signal, _signal):
    if hasattr(module, "pidfd_send_signal"):
      module.pidfd_send_signal = refusing("signalling other processes")


def syscall_filter(own_pid):
  """The seccomp-BPF program (x86_64): `(code, jt, jf, k)` instructions over `seccomp_data`
  (nr at offset 0, arch at 4, argument i's low 32 bits at 16 + 8 i; every argument tested
  is an int or has its high bits ignored by the kernel).

  Another architecture's calls kill the process, the x32 ABI's fail; `REFUSED_SYSCALLS` fail
  with EPERM; `clone3` with ENOSYS (its flags are behind a pointer; glibc falls back to
  `clone`). `clone` only makes a thread (CLONE_THREAD, no new namespace); `socketpair` only
  AF_UNIX streams; calls that reach other processes by pid only reach this one: `kill`
  and `tgkill`, `prlimit64` and the `sched_set*` calls (pid 0 or its own), `setpriority`
  (PRIO_PROCESS of those); `REFUSED_FCNTLS` and `REFUSED_IOCTLS` fail. Everything else
  is allowed.
  """
  deny, allow = (BPF_RET, 0, 0, SECCOMP_RET_ERRNO | EPERM), (BPF_RET, 0, 0, SECCOMP_RET_ALLOW)
  program = [(BPF_LD_ABS, 0, 0, 4), (BPF_JEQ, 1, 0, AUDIT_ARCH_X86_64),
             (BPF_RET, 0, 0, SECCOMP_RET_KILL_PROCESS),
             (BPF_LD_ABS, 0, 0, 0), (BPF_JGE, 0, 1, X32_SYSCALL_BIT), deny]
  for nr in sorted(REFUSED_SYSCALLS.values()):
    program += [(BPF_JEQ, 0, 1, nr), deny]
  program += [(BPF_JEQ, 0, 1, SYSCALLS["clone3"]), (BPF_RET, 0, 0, SECCOMP_RET_ERRNO | ENOSYS)]
  program += _decide("clone", [(0, BPF_JSET, (NAMESPACE_CLONE_FLAGS,))], deny, None)
  program += _decide("clone", [(0, BPF_JSET, (CLONE_THREAD,))], allow, deny)
  program += _decide("socketpair", [(0, BPF_JEQ, (AF_UNIX,)), (1, BPF_JEQ, SOCK_STREAM_TYPES)],
                     allow, deny)
  for name in ("kill", "tgkill"):
    program += _decide(name, [(0, BPF_JEQ, (own_pid,))], allow, deny)
  for name in ("prlimit64", "sched_setaffinity", "sched_setparam", "sched_setscheduler",
               "sched_setattr"):
    program += _decide(name, [(0, BPF_JEQ, (0, own_pid))], allow, deny)
  program += _decide("setpriority", [(0, BPF_JEQ, (PRIO_PROCESS,)), (1, BPF_JEQ, (0, own_pid))],
                     allow, deny)
  program += _decide("fcntl", [(1, BPF_JEQ, REFUSED_FCNTLS)], deny, allow)
  program += _decide("ioctl", [(1, BPF_JEQ, REFUSED_IOCTLS)], deny, allow)
  return program + [allow]


def _decide(name, conditions, when_all_hold, otherwise):
  """Instructions that, for syscall `name` only, return `when_all_hold` if every condition
  (argument index, test, values: the test passes for one of the values) holds, else
  `otherwise` (None: go on to the next rule); other syscalls go on to the next rule, with
  the syscall number loaded."""
  otherwise = otherwise or (BPF_LD_ABS, 0, 0, 0)
  body = []
  for argument, test, values in conditions:
    body.append((BPF_LD_ABS, 0, 0, 16 + 8 * argument))
    body += [(test, len(values) - j, 0, value) for j, value in enumerate(values)]
    body.append((BPF_JA, 0, 0, None))               # no value passed: to `otherwise`
  body += [when_all_hold, otherwise]
  body = [(code, jt, jf, len(body) - 1 - i - 1 if k is None else k)
          for i, (code, jt, jf, k) in enumerate(body)]
  return [(BPF_JEQ, 0, len(body), SYSCALLS[name])] + body


def no_new_privileges(libc):
  """prctl(PR_SET_NO_NEW_PRIVS): what Landlock and seccomp need; whether it was set."""
  libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
  return libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0


class _PathBeneath(ctypes.Structure):
  """Landlock's `struct landlock_path_beneath_attr` (packed)."""
  _pack_ = 1
  _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def restrict_writes(workdir):
  """Landlock (kernel >= 5.13, where enabled): from here on the kernel refuses every write,
  create, remove, rename, link and truncation outside `workdir` and /dev/shm, and every
  write open of another file than `SAFE_DEVICES`: FIFOs and device nodes on any mount, and
  through `dir_fd`, which the audit hook does not see. Skipped where unavailable."""
  libc = ctypes.CDLL(None, use_errno=True)
  syscall = lambda *args: libc.syscall(*(ctypes.c_long(a) if isinstance(a, int) else a  # noqa: E731
                                         for a in args))
  abi = syscall(LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
  if abi < 1:
    return
  handled = sum(right for right, since in LANDLOCK_WRITE_RIGHTS.items() if abi >= since)
  ruleset_attr = ctypes.c_uint64(handled)
  ruleset = syscall(LANDLOCK_CREATE_RULESET, ctypes.byref(ruleset_attr), 8, 0)
  if ruleset < 0:
    return
  rules = [(workdir, handled), ("/dev/shm", handled)]
  rules += [(f"/dev/{name}", handled & LANDLOCK_FILE_RIGHTS) for name in SAFE_DEVICES]
  try:
    for path, rights in rules:
      try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
      except OSError:
        continue
      syscall(LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH,
              ctypes.byref(_PathBeneath(rights, fd)), 0)
      os.close(fd)
    if no_new_privileges(libc):
      syscall(LANDLOCK_RESTRICT_SELF, ruleset, 0)
  finally:
    os.close(ruleset)


def install_syscall_filter():
  """Installs `syscall_filter` (after no_new_privs), kernel-enforced under all Python code:
  what the audit hook refuses but deliberate code could get past it to, the kernel refuses
  too. Skipped, as the namespaces are, where the kernel or architecture does not allow it."""
  if os.uname().machine != "x86_64" or struct.calcsize("P") != 8:   # (not i386/x32 builds)
    return
  program = syscall_filter(os.getpid())

  class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]

  class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

  instructions = (SockFilter * len(program))(*program)
  fprog = SockFprog(len(program), instructions)
  libc = ctypes.CDLL(None, use_errno=True)
  if no_new_privileges(libc):
    libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0)


def install_audit_hook(workdir):
  """From now on, refuses network, processes, writes outside `workdir`, ctypes and peeking."""
  # Bound now, so that rebinding e.g. `os.path.realpath` later does not reach the hook.
  realpath, join, fsdecode, fspath, readlink = (os.path.realpath, os.path.join, os.fsdecode,
                                                os.fspath, os.readlink)
  dirname, getcwd = os.path.dirname, os.getcwd
  own_proc, own_pid = f"/proc/{os.getpid()}", os.getpid()
  python_dirs = tuple(realpath(p) + "/" for p in {sys.prefix, sys.base_prefix})
  # Code the checks run: this program's and the path modules' (os, posixpath, genericpath;
  # frozen modules' code says "<frozen posixpath>", not their __file__).
  guarded_files = frozenset(f.__code__.co_filename for f in (
      install_audit_hook, os.walk, os.path.realpath, os.path.exists))

  def swaps_guarded_code(target):
    """Whether setting `target.__code__` would change code the hook's checks run (other
    code may: `types.coroutine`, which asyncio uses, swaps it)."""
    code = getattr(target, "__code__", None)
    return code is None or code.co_filename in guarded_files

  def resolve(path, dir_fd=None):
    """The real path `path` names (an int is an open fd); None if it is no file (a pipe...)."""
    if isinstance(path, int):
      path = readlink(f"/proc/self/fd/{path}")
      if not path.startswith("/"):
        return None
    path = fsdecode(fspath(path))
    if dir_fd is not None and dir_fd >= 0 and not path.startswith("/"):
      path = join(readlink(f"/proc/self/fd/{dir_fd}"), path)
    return realpath(path)

  def writable(real):
    """Whether a change to real path `real` stays inside the working directory (or is no
    file). Not /dev/null: its mode and times are the host's."""
    return real is None or real == workdir or real.startswith(workdir + "/")

  def other_process(real):
    """Whether `real` lies under another process's /proc/<pid>/."""
    parts = (real or "").split("/")
    return (len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit()
            and not (real + "/").startswith(own_proc + "/"))

  def through_other_process(path):
    """Whether resolving `path` passes through another process's /proc/<pid>/ at any step.

    `realpath` alone would miss it: /proc/<pid>/fd/N and .../cwd are magic links, so
    resolving them lands on whatever file the other process holds (a memfd, a deleted
    file); a symlink in the working directory can point at them too.
    """
    if isinstance(path, int):
      return other_process(resolve(path))
    path = fsdecode(fspath(path))
    current, pending, hops = ("/" if path.startswith("/") else getcwd()), path.split("/"), 0
    pending.reverse()
    while pending:
      name = pending.pop()
      if name in ("", "."):
        continue
      current = dirname(current) if name == ".." else join(current, name)
      if other_process(current):
        return True
      try:
        target = readlink(current)
      except OSError:   # not a link (or not there): the walk goes on from here
        continue
      hops += 1
      if hops > 40:     # a link loop: the open itself fails with ELOOP
        return False
      current = "/" if target.startswith("/") else dirname(current)
      pending.extend(reversed(target.split("/")))
    return False

  def check_open(path, mode, flags):
    """Why the `open` event is refused, or None."""
    real = resolve(path)
    if other_process(real) or through_other_process(path):
      return "reading other processes' /proc entries is not allowed"
    writes = (flags & WRITE_FLAGS) or (isinstance(mode, str) and any(c in mode for c in "wax+"))
    if writes and not (writable(real) or real == "/dev/null"):
      return f"writing outside the working directory is not allowed: {path}"
    return None

  def check_paths(event, args):
    """Why an event that changes files is refused, or None."""
    for path_index, dir_fd_index in PATH_EVENTS[event]:
      dir_fd = args[dir_fd_index] if dir_fd_index is not None else None
      if not writable(resolve(args[path_index], dir_fd)):
        return f"changing files outside the working directory is not allowed: {args[path_index]}"
    return None

  def unaudited_module(name, filename):
    """Whether an import (under any name, from any copy) loads a module whose calls the
    audit misses (`UNAUDITED_MODULES`: replaced in the loaded instance only)."""
    base = fsdecode(filename).rsplit("/", 1)[-1] if isinstance(filename, (str, bytes)) else ""
    return any(str(name).rsplit(".", 1)[-1] == m or base.startswith(m + ".")
               for m in UNAUDITED_MODULES)

  def python_library(name):
    """Whether `name` is a shared library inside the Python installation (torch loads some)."""
    return isinstance(name, str) and name.startswith("/") and realpath(name).startswith(python_dirs)

  def why_blocked(event, args):
    """The reason to refuse audit event `event`, or None to allow it."""
    if event == "open":
      return check_open(*args)
    if event in PATH_EVENTS:
      return check_paths(event, args)
    if event in NETWORK_EVENTS or (event == "socket.__new__" and args[1] != 1):   # 1: AF_UNIX
      return "network access is not allowed"
    if event in PROCESS_EVENTS or (event == "import" and unaudited_module(*args[:2])):
      return "creating processes is not allowed"
    if event == "object.__setattr__" and args[1] == "__code__" and swaps_guarded_code(args[0]):
      return "replacing a function's code is not allowed"
    if (event.startswith("ctypes.") and event not in HARMLESS_CTYPES_EVENTS
        and not (event == "ctypes.dlopen" and python_library(args[0]))):
      return "ctypes is not allowed"
    if event in TAMPER_EVENTS:
      return "gc object enumeration is not allowed"
    if ((event == "os.kill" and args[0] != own_pid) or event == "os.killpg"
        or (event == "fcntl.fcntl" and args[1] in SIGNAL_OWNER_FCNTLS)
        or (event == "fcntl.ioctl" and args[1] in SIGNAL_OWNER_IOCTLS)):
      return "signalling other processes is not allowed"
    if ((event == "fcntl.fcntl" and args[1] in REFUSED_FCNTLS)
        or (event == "fcntl.ioctl" and args[1] in REFUSED_IOCTLS)):
      return f"{event} command {args[1]:#x} is not allowed"
    if event == "resource.prlimit" and args[0] not in (0, own_pid):
      return "changing other processes is not allowed"
    return None

  def hook(event, args):
    reason = why_blocked(event, args)
    if reason:
      raise PermissionError("blocked: " + reason)

  sys.addaudithook(hook)


def run_user_code(source):
  """Runs `source` as a fresh `__main__` module; returns the exit status, tracebacks on stderr."""
  linecache.cache["<code>"] = (len(source), None, source.splitlines(True), "<code>")
  try:
    code = compile(source, "<code>", "exec")
  except (SyntaxError, ValueError) as e:
    traceback.print_exception(type(e), e, None)
    return 1
  main = types.ModuleType("__main__")
  sys.modules["__main__"] = main
  try:
    exec(code, vars(main))
  except SystemExit:
    raise
  except BaseException as e:   # the user's error, minus this program's own frame
    traceback.print_exception(type(e), e, e.__traceback__.tb_next)
    return 1
  return 0


def main():
  """Limits, isolates, filters syscalls, then runs the code from stdin in WORKDIR."""
  workdir, cpu_s, memory_bytes, file_bytes = sys.argv[1], *map(int, sys.argv[2:5])
  join_cgroup(sys.argv[5] if len(sys.argv) > 5 else "")
  source = sys.stdin.buffer.read().decode()
  set_limits(cpu_s, memory_bytes, file_bytes)
  isolate(workdir, WORKDIR_FILES * file_bytes)
  refuse_unaudited_calls()
  restrict_writes(workdir)
  install_syscall_filter()
  sys.path.insert(0, workdir)
  install_audit_hook(workdir)
  sys.exit(run_user_code(source))


if __name__ == "__main__":
  main()
