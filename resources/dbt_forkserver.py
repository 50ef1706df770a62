"""A dbt forkserver: one long-lived process imports dbt once and forks a child for every dbt call.

Why: a `dbt` call pays an interpreter start and dbt-core's imports (3-4 s on an idle machine, far more on
a loaded one) before it parses a file or runs any SQL, and the platform calls dbt twice an hour. A fork
of a process that has dbt imported costs milliseconds.

How a call goes (resources/dbt_dies_with_parent.py is the client, still the executable dagster-dbt runs):
- The wrapper connects to the server's Unix socket and sends argv, environment, working directory and
  umask, with its stdin/stdout/stderr as file descriptors (SCM_RIGHTS). No server answering: it starts
  one (detached, its own session, logging to a file) and connects once it listens.
- The server forks. The child takes the wrapper's fds as 0/1/2, its directory, environment and a fresh
  `sys.path` as a `dbt` console script would have them, and runs dbt's click entry point in standalone
  mode exactly as the console script does, so stdout carries dbt's JSON log lines and the exit code
  (0, 1 failed nodes, 2 errors) is dbt's. It reports the exit status, then `_exit`s.
- A thread in the child reads the connection: a signal number from the wrapper (which forwards SIGINT and
  SIGTERM, as dagster-dbt cancels with SIGINT) is raised in the child; the connection closing (the wrapper
  died, even by SIGKILL) raises SIGINT, so dbt cancels its queries as on Ctrl-C and nothing writes the
  warehouse after its step died.
- The server is single-threaded when it forks (checked before every fork; DuckDB's default connection
  starts a worker thread at import, so the server sets it to one thread and the child resets it). dbt's
  global state, DuckDB connections and their file locks all live in the child and die with it.
- One server per (uid, interpreter, dbt-core version, installed packages, this file): the socket name is
  a hash of them, so an upgraded venv or a changed forkserver gets a new server and the old one idles
  out (IDLE_EXIT_SECONDS). A lock file makes the first of two racing servers the only one.

Standard library only at module level: the wrapper imports this file on every dbt call.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

SWITCH_ENV = "STRATA_DBT_FORKSERVER"  # "0": no forkserver, the wrapper execs dbt as before
DIRECTORY_ENV = "STRATA_DBT_FORKSERVER_DIR"  # where sockets, locks and logs live (tests use their own)
IDLE_EXIT_SECONDS = 600.0
START_TIMEOUT_SECONDS = 120.0  # importing dbt on a loaded 2-core machine has taken 9 s; leave a margin
REQUEST_TIMEOUT_SECONDS = 10.0
REFUSAL_RETRY_SECONDS = 600.0  # a server that could not start is not tried again for this long
MAX_REQUEST_BYTES = 16 * 1024 * 1024
# How long dbt has, after a SIGINT, to stop on its own before it is ended outright. dbt cancels its open
# queries on Ctrl-C, but DuckDB drops a cancel that arrives before its query has begun, and a Python model
# cannot be cancelled at all; dbt then waits for that query while it closes its connections, for hours,
# holding the warehouse's file lock. Below dagster-dbt's 25 s wait for dbt after its own SIGINT, so a
# cancelled step sees dbt end.
STOP_GRACE_ENV = "STRATA_DBT_STOP_GRACE_SECONDS"
STOP_GRACE_SECONDS = 20.0
HEADER = struct.Struct("!I")
# Read by dbt at import time (dbt/clients/registry.py), so a forked child could not honour a per-call value.
IMPORT_TIME_ENV = ("DBT_PACKAGE_HUB_URL",)
# What the server process itself keeps of its starter's environment: nothing that belongs to one call.
SERVER_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME")
PRELOAD = (
    "dbt.cli.main",
    "agate",
    "dbt_common.clients.agate_helper",
    "dbt.compilation",
    "dbt.graph.thread_pool",
    "dbt.parser.sql",
    "dbt.runners",
    "dbt.task.build",
    "dbt.task.compile",
    "dbt.task.list",
    "dbt.task.run",
    "dbt.task.seed",
    "dbt.task.snapshot",
    "dbt.task.test",
    "multiprocessing.dummy",
    "multiprocessing.pool",
    "babel.dates",
    "daff",
    "google.protobuf.descriptor_pb2",
    "_strptime",
)
DBT_COMMANDS = frozenset(
    {"build", "clean", "clone", "compile", "debug", "deps", "docs", "init", "list", "ls", "parse", "retry", "run"}
    | {"run-operation", "seed", "show", "snapshot", "source", "test"}
)


# --- where the server lives ---------------------------------------------------------------------------------


def forkserver_wanted(environ: dict[str, str] | os._Environ[str]) -> bool:
    """Off by the switch, and for a call whose environment dbt reads at import time."""
    return environ.get(SWITCH_ENV, "1") != "0" and not any(name in environ for name in IMPORT_TIME_ENV)


def server_directory(environ: dict[str, str] | os._Environ[str]) -> Path:
    """A directory only this user can enter: other users must not reach the socket (a call runs as us)."""
    if explicit := environ.get(DIRECTORY_ENV):
        return Path(explicit)
    if runtime := environ.get("XDG_RUNTIME_DIR"):
        return Path(runtime) / "strata-dbt"
    return Path("/tmp") / f"strata-dbt-{os.getuid()}"


def private_directory(directory: Path) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(directory)
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{directory} must be owned by uid {os.getuid()} and private (mode 700)")
    return directory


def server_address(python: str, environ: dict[str, str] | os._Environ[str]) -> Path:
    """The socket of the server for this interpreter, dbt-core version, installed packages and this file."""
    from importlib.metadata import distribution

    dbt_core = distribution("dbt-core")
    site_packages = Path(str(dbt_core.locate_file("")))
    identity = "\0".join(
        [
            str(os.getuid()),
            python,
            dbt_core.version,
            str(os.stat(site_packages).st_mtime_ns),  # changes when any package is added, removed or upgraded
            hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        ]
    )
    name = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return private_directory(server_directory(environ)) / f"dbt-{name}.sock"


def sibling(address: Path, suffix: str) -> Path:
    return address.with_suffix(suffix)


# --- the wire -------------------------------------------------------------------------------------------------


def encode_request(request: dict[str, Any]) -> bytes:
    # ensure_ascii keeps undecodable environment bytes (surrogate escapes) intact through JSON.
    payload = json.dumps(request, ensure_ascii=True).encode()
    return HEADER.pack(len(payload)) + payload


def decode_request(data: bytes) -> dict[str, Any]:
    """The request in `data` (header + JSON); ValueError for anything that is not a well-formed call."""
    if len(data) < HEADER.size:
        raise ValueError("request shorter than its header")
    (length,) = HEADER.unpack_from(data)
    if length > MAX_REQUEST_BYTES or len(data) != HEADER.size + length:
        raise ValueError(f"request of {len(data) - HEADER.size} bytes, header says {length}")
    try:
        request = json.loads(data[HEADER.size :])
    except UnicodeDecodeError as error:
        raise ValueError(f"request is not UTF-8: {error}") from error
    if not isinstance(request, dict):
        raise ValueError("request is not a JSON object")
    if request.get("ping") is True:
        return request
    argv, env, cwd, umask = request.get("argv"), request.get("env"), request.get("cwd"), request.get("umask")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a non-empty list of strings")
    if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise ValueError("env must map strings to strings")
    if any(not k or "=" in k or "\0" in k or "\0" in v for k, v in env.items()):
        raise ValueError("env holds a name or value the OS cannot set")
    if not (isinstance(cwd, str) and cwd.startswith("/")):
        raise ValueError("cwd must be an absolute path")
    if not (isinstance(umask, int) and not isinstance(umask, bool) and 0 <= umask <= 0o777):
        raise ValueError("umask must be an integer 0..0o777")
    return request


def send_message(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def read_messages(conn: socket.socket, buffer: bytearray) -> list[dict[str, Any]] | None:
    """The complete messages that arrived next; None once the peer has closed (or reset) the connection."""
    try:
        data = conn.recv(4096)
    except (ConnectionResetError, ConnectionAbortedError):
        data = b""
    if not data:
        return None
    buffer.extend(data)
    *lines, rest = bytes(buffer).split(b"\n")
    buffer[:] = rest
    return [json.loads(line) for line in lines if line.strip()]


def exit_status(code: object) -> int:
    """The process exit status `sys.exit(code)` gives at the top of a script (what the console script does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


# --- the client (the wrapper) ---------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"strata dbt wrapper: {message}", file=sys.stderr, flush=True)


def connect(address: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(address))
    except OSError:
        conn.close()
        return None
    return conn


def server_environment(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The server's own environment: none of one call's values (each child gets its call's environment)."""
    return {name: value for name, value in environ.items() if name in SERVER_ENV or name.startswith("LC_")}


def refusal(address: Path) -> str | None:
    """Why the last server for this address could not start, if that was recent."""
    marker = sibling(address, ".refused")
    try:
        if time.time() - marker.stat().st_mtime < REFUSAL_RETRY_SECONDS:
            return marker.read_text().strip()
    except OSError:
        pass
    return None


def start_server(address: Path, python: str) -> socket.socket | None:
    """Start a server for `address` and connect to it (or to the one a racing wrapper started)."""
    import subprocess

    with open(sibling(address, ".log"), "ab") as server_log:
        server = subprocess.Popen(
            [python, "-P", str(Path(__file__).resolve()), "serve", str(address)],
            stdin=subprocess.DEVNULL,
            stdout=server_log,
            stderr=subprocess.STDOUT,
            cwd="/",
            env=server_environment(os.environ),
            start_new_session=True,  # no terminal signals, and it outlives this call
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if (conn := connect(address)) is not None:
            return conn
        # Exit 0: another server holds the lock and is starting; keep waiting for it to listen.
        if server.poll() not in (None, 0):
            return None
        time.sleep(0.05)
    return None


def run_in_server(argv: list[str], python: str) -> tuple[str, int] | None:
    """Run dbt (`argv`, argv[0] the dbt executable) in a forked child of the server.

    Returns ("exit", status) or ("signal", number) as the child ended, or None when no server could take
    the call (then nothing ran, and the caller runs dbt itself)."""
    try:
        address = server_address(python, os.environ)
    except (OSError, ImportError) as error:
        log(f"no dbt forkserver ({error}); running dbt directly")
        return None
    if refusal(address) is not None:
        return None  # logged when the server refused; dbt runs directly until the refusal expires
    request = {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "umask": current_umask()}
    for _attempt in range(3):
        conn = connect(address)
        if conn is None:
            with open(sibling(address, ".start.lock"), "a") as start_lock:
                fcntl.flock(start_lock, fcntl.LOCK_EX)  # one wrapper starts the server, the others wait
                conn = connect(address) or start_server(address, python)
        if conn is None:
            reason = refusal(address) or f"server did not start, see {sibling(address, '.log')}"
            log(f"dbt forkserver unavailable ({reason}); running dbt directly")
            return None
        with conn:
            outcome = call(conn, request)
        if outcome is not None:
            return outcome
    log("dbt forkserver kept closing the connection; running dbt directly")
    return None


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def call(conn: socket.socket, request: dict[str, Any]) -> tuple[str, int] | None:
    """Send the call, forward SIGINT/SIGTERM to the child, and wait for its end."""
    with open(os.devnull, "rb") as null:
        fds = [fd if valid_fd(fd) else null.fileno() for fd in (0, 1, 2)]
        socket.send_fds(conn, [encode_request(request)], fds)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(OSError):
            send_message(conn, {"signal": signum})

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    buffer = bytearray()
    started = False
    try:
        while (messages := read_messages(conn, buffer)) is not None:
            for message in messages:
                if "refused" in message:
                    log(f"dbt forkserver refused the call ({message['refused']}); running dbt directly")
                    return None
                if "exit" in message:
                    return "exit", int(message["exit"])
                if "signal" in message:
                    return "signal", int(message["signal"])
                started = started or "pid" in message
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if started:
        log("the dbt forkserver and its child ended without reporting dbt's exit status")
        return "exit", 2
    return None  # closed before any child took the call (the server was exiting): try again


def valid_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def stop_grace_seconds(environ: dict[str, str] | os._Environ[str]) -> float:
    try:
        return max(0.0, float(environ.get(STOP_GRACE_ENV, STOP_GRACE_SECONDS)))
    except ValueError:
        return STOP_GRACE_SECONDS


def interrupt_with_deadline(grace: float) -> None:
    """SIGINT stays Ctrl-C for dbt (KeyboardInterrupt in the main thread, which cancels the queries), and
    also starts a deadline: a process still running `grace` seconds later is ended by the kernel (SIGALRM's
    default action). A timer signal and not a thread: a dbt stuck in DuckDB's close may hold the GIL, and
    no Python code would run again. The process must be dbt's alone (a forked call, or the wrapper that
    became dbt)."""

    def on_interrupt(signum: int, frame: Any) -> None:
        if signal.getitimer(signal.ITIMER_REAL)[0] == 0.0:  # the first Ctrl-C starts the deadline
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.setitimer(signal.ITIMER_REAL, max(grace, 0.001))
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_interrupt)


def run_here(dbt: str, args: list[str], wrapper_dir: str) -> None:
    """Become the dbt process of this call in this interpreter, without a server (the forkserver switched
    off or unavailable): dbt's console script run as `dbt` would run it, with the stop deadline; never
    returns (dbt's `sys.exit`, or its uncaught Ctrl-C, ends the process)."""
    import runpy

    interrupt_with_deadline(stop_grace_seconds(os.environ))
    name_process(b"dbt")
    own_path = [entry for entry in sys.path if entry and os.path.realpath(entry) != os.path.realpath(wrapper_dir)]
    sys.path[:] = call_sys_path(dbt, dict(os.environ), own_path)
    sys.argv = [dbt, *args]
    runpy.run_path(dbt, run_name="__main__")
    sys.exit(0)


def end_like(outcome: tuple[str, int]) -> None:
    """Exit as the child did: with its exit status, or killed by the same signal."""
    kind, value = outcome
    sys.stdout.flush()
    if kind == "signal":
        signal.signal(value, signal.SIG_DFL)
        os.kill(os.getpid(), value)
        value = 128 + value
    os._exit(value)


# --- the server -----------------------------------------------------------------------------------------------


def server_log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [{os.getpid()}] {message}", file=sys.stderr, flush=True)


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def preload() -> None:
    """Import dbt, every installed adapter plugin and what a build imports lazily; leave one thread."""
    import gc
    import importlib
    import pkgutil

    for module in PRELOAD:
        importlib.import_module(module)
    import dbt.adapters

    for found in pkgutil.iter_modules(dbt.adapters.__path__):  # every installed adapter plugin (and dbt's own)
        try:
            importlib.import_module(f"dbt.adapters.{found.name}")
        except Exception:  # not every subpackage of dbt.adapters imports on its own
            continue
    if "dbt.adapters.duckdb" in sys.modules:
        importlib.import_module("dbt.adapters.duckdb.environments.local")
    if "duckdb" in sys.modules:
        # `import duckdb` opens a default in-memory database with a worker thread; forking must not copy a
        # process with threads. The child resets it.
        sys.modules["duckdb"].execute("SET threads = 1")
    gc.freeze()  # the children's garbage collector then leaves the shared pages alone (copy-on-write)


def serve(address: Path) -> int:
    with open(sibling(address, ".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            server_log(f"another server holds {lock.name}; exiting")
            return 0
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        sibling(address, ".refused").unlink(missing_ok=True)
        began = time.monotonic()
        try:
            preload()
            os.close(os.pidfd_open(os.getpid()))
        except BaseException as error:
            return refuse(address, f"cannot prepare dbt: {error!r}")
        if (threads := native_threads()) != 1:
            return refuse(address, f"{threads} threads after importing dbt; forking needs one")
        address.unlink(missing_ok=True)  # a socket left by a server that was killed
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous_umask = os.umask(0o077)
        try:
            listener.bind(str(address))
        finally:
            os.umask(previous_umask)
        listener.listen(64)
        inode = os.stat(address).st_ino
        server_log(f"serving {address} (dbt imported in {time.monotonic() - began:.1f} s)")
        selector = selectors.DefaultSelector()  # epoll: a file descriptor, no thread
        selector.register(listener, selectors.EVENT_READ, None)
        children: dict[int, tuple[socket.socket, int]] = {}
        last_activity = time.monotonic()
        try:
            while True:
                timeout = None if children else last_activity + IDLE_EXIT_SECONDS - time.monotonic()
                if timeout is not None and timeout <= 0:
                    server_log(f"idle for {IDLE_EXIT_SECONDS:.0f} s; exiting")
                    break
                for key, _ in selector.select(timeout):
                    last_activity = time.monotonic()
                    if key.data is None:
                        accept(listener, selector, children, lock)
                    else:
                        reap(key.data, selector, children)
        finally:
            with contextlib.suppress(OSError):
                if os.stat(address).st_ino == inode:  # not a newer server's socket
                    address.unlink()
            listener.close()
    return 0


def refuse(address: Path, reason: str) -> int:
    server_log(f"refusing to serve: {reason}")
    sibling(address, ".refused").write_text(reason + "\n")
    return 1


def accept(listener: socket.socket, selector: Any, children: dict[int, tuple[socket.socket, int]], lock: Any) -> None:
    conn, _ = listener.accept()
    fds: list[int] = []
    try:
        conn.settimeout(REQUEST_TIMEOUT_SECONDS)
        peer_pid, peer_uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if peer_uid != os.getuid():
            raise PermissionError(f"caller pid {peer_pid} runs as uid {peer_uid}, not {os.getuid()}")
        request, fds = receive_request(conn)
        if request.get("ping"):
            send_message(conn, {"server": os.getpid()})
            conn.close()
            return
        if (threads := native_threads()) != 1:
            send_message(conn, {"refused": f"server has {threads} threads"})
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            inherited = [listener, selector, lock, *(c for c, _ in children.values())]
            run_child(conn, request, fds, inherited, [p for _, p in children.values()])
        pidfd = os.pidfd_open(pid)
        children[pid] = (conn, pidfd)
        selector.register(pidfd, selectors.EVENT_READ, pid)
        command = next((a for a in request["argv"][1:] if a in DBT_COMMANDS), "?")
        server_log(f"call from pid {peer_pid}: dbt {command} in child {pid}")
        with contextlib.suppress(OSError):
            send_message(conn, {"pid": pid})
    except (OSError, ValueError) as error:
        server_log(f"call not taken: {error}")
        conn.close()
    finally:
        for fd in fds:
            os.close(fd)


def receive_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, flags, _ = socket.recv_fds(conn, 65536, 3)
    try:
        if flags & socket.MSG_CTRUNC:
            raise ValueError("file descriptors truncated")
        buffer = bytearray(data)
        while len(buffer) >= HEADER.size and len(buffer) < HEADER.size + min(
            HEADER.unpack_from(buffer)[0], MAX_REQUEST_BYTES
        ):
            chunk = conn.recv(65536)
            if not chunk:
                break
            buffer.extend(chunk)
        request = decode_request(bytes(buffer))
        if not request.get("ping") and len(fds) != 3:
            raise ValueError(f"expected stdin, stdout and stderr, got {len(fds)} file descriptors")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return request, fds


def reap(pid: int, selector: Any, children: dict[int, tuple[socket.socket, int]]) -> None:
    conn, pidfd = children.pop(pid)
    selector.unregister(pidfd)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    outcome = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.waitstatus_to_exitcode(status)}
    server_log(f"child {pid} ended: {outcome}")
    with contextlib.suppress(OSError):  # the wrapper may be gone with the child's own report
        send_message(conn, outcome)
    conn.close()


# --- the child ------------------------------------------------------------------------------------------------


def run_child(
    conn: socket.socket, request: dict[str, Any], fds: list[int], inherited: list[Any], pidfds: list[int]
) -> None:
    """Become the dbt process of this call, run dbt, report, and `_exit` (never return into the server)."""
    status = 70  # EX_SOFTWARE, should preparing the child itself fail
    try:
        os.setsid()  # out of the server's process group: signals meant for the server do not reach calls
        for thing in inherited:
            thing.close()
        for pidfd in pidfds:
            os.close(pidfd)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        fds.clear()
        conn.settimeout(None)
        reset_signals()
        interrupt_with_deadline(stop_grace_seconds(request["env"]))
        name_process(b"dbt")
        os.umask(request["umask"])
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        adopt_locale()
        sys.path[:] = call_sys_path(request["argv"][0], request["env"], sys.path)
        sys.argv = list(request["argv"])
        fresh_stdio(request["env"])
        if "duckdb" in sys.modules:
            sys.modules["duckdb"].execute("RESET threads")
        finished = watch_connection(conn)
        kind, status = run_dbt()
        finished.set()  # from here on, the wrapper closing the connection is the normal end of the call
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            send_message(conn, {kind: status})
        if kind == "signal":
            signal.signal(status, signal.SIG_DFL)
            os.kill(os.getpid(), status)
    except BaseException:
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    finally:
        os._exit(status)


def reset_signals() -> None:
    """The dispositions a fresh interpreter starts with."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def name_process(name: bytes) -> None:
    """`dbt` in ps/top (comm), instead of the server's name."""
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME


def adopt_locale() -> None:
    import locale

    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_CTYPE, "")


def call_sys_path(dbt: str, env: dict[str, str], server_path: list[str]) -> list[str]:
    """`sys.path` of the `dbt` console script started with `env`: its own directory (symlinks resolved),
    then PYTHONPATH, then the interpreter's own entries (the server starts with neither)."""
    head = [] if env.get("PYTHONSAFEPATH") else [os.path.dirname(os.path.realpath(dbt))]
    pythonpath = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return head + pythonpath + [entry for entry in server_path if entry not in head + pythonpath]


def fresh_stdio(env: dict[str, str]) -> None:
    """stdin/stdout/stderr on fds 0-2 as a new interpreter would open them for `env` (PYTHONUNBUFFERED, which
    dagster-dbt sets, makes dbt's log lines reach it as they are written)."""
    import io
    import locale

    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    encoding, _, errors = env.get("PYTHONIOENCODING", "").partition(":")
    encoding = encoding or ("utf-8" if sys.flags.utf8_mode else locale.getpreferredencoding(False))

    def stream(fd: int, writing: bool, default_errors: str) -> io.TextIOWrapper:
        raw = io.FileIO(fd, "wb" if writing else "rb", closefd=False)
        buffered: Any = (
            raw if (writing and unbuffered) else (io.BufferedWriter(raw) if writing else io.BufferedReader(raw))
        )
        interactive = os.isatty(fd)
        return io.TextIOWrapper(
            buffered,
            encoding=encoding,
            errors=errors or default_errors,
            line_buffering=writing and (interactive or fd == 2),
            write_through=writing and unbuffered,
        )

    sys.stdin = sys.__stdin__ = stream(0, False, "strict")
    sys.stdout = sys.__stdout__ = stream(1, True, "strict")
    sys.stderr = sys.__stderr__ = stream(2, True, "backslashreplace")


def watch_connection(conn: socket.socket) -> Any:
    """Raise in this process the signals the wrapper forwards, and SIGINT when the wrapper is gone, until
    the returned event is set. Signals go to the main thread, where dbt waits for its worker threads (as the
    kernel delivers a process-directed SIGINT there)."""
    import threading

    main = threading.get_ident()
    finished = threading.Event()

    def watch() -> None:
        buffer = bytearray()
        while True:
            try:
                messages = read_messages(conn, buffer)
            except (OSError, ValueError):
                messages = None
            if finished.is_set():
                return
            if messages is None:  # the wrapper died: stop as on Ctrl-C
                signal.pthread_kill(main, signal.SIGINT)
                return
            for message in messages:
                if isinstance(message.get("signal"), int):
                    signal.pthread_kill(main, message["signal"])

    threading.Thread(target=watch, name="strata-dbt-call-watch", daemon=True).start()
    return finished


def run_dbt() -> tuple[str, int]:
    """`sys.exit(cli())` as dbt's console script does, and what the interpreter then does at exit."""
    import atexit
    import threading
    import traceback

    try:
        from dbt.cli.main import cli

        outcome = ("exit", exit_status(cli()))
    except SystemExit as stop:
        outcome = ("exit", exit_status(stop.code))
    except KeyboardInterrupt:
        traceback.print_exc()
        outcome = ("signal", int(signal.SIGINT))  # an uncaught Ctrl-C kills the interpreter by SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())
        outcome = ("exit", 1)
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()  # join non-daemon threads, as the interpreter does before exiting
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            if outcome == ("exit", 0):
                outcome = ("exit", 120)  # what the interpreter exits with when flushing stdout fails
    return outcome


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "serve":
        return serve(Path(argv[1]))
    print("usage: dbt_forkserver.py serve SOCKET", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
