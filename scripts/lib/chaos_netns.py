"""The network namespace of scripts/chaos's `network_partition` fault (root and `ip netns`).

Topology, for the suite's pid P and a free k (10.231.k.0/24 and 10.232.k.0/24 unused here):

    host                                   namespace gfchaos-P (coordinator c3)
    gfaPh 10.231.k.1  <-- veth pair A -->  gfaPn 10.231.k.2   the database only (a forwarder
                                                              on 10.231.k.1 to 127.0.0.1:PORT)
    gfbPh 10.232.k.1  <-- veth pair B -->  gfbPn 10.232.k.2   everything else: etcd, Redis,
                                                              the other coordinators, agents
The partition is `ip link set gfbPh down`: c3 loses etcd, Redis, the other coordinators and the
agents, and keeps its database (so a leader cut off while it still writes must be fenced out by
its token). Everything is removed by teardown(), idempotent, also after a failed setup."""
import os, select, socket, subprocess, threading


class NetnsError(Exception):
    pass


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and r.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


def unavailable():
    """Why no namespace can be made here, or None."""
    if os.geteuid() != 0:
        return "needs root for ip netns"
    try:
        if ip("netns", "list", check=False).returncode != 0:
            return "no working `ip netns`"
    except (OSError, subprocess.SubprocessError):
        return "no `ip` command"
    return None


class Netns:
    def __init__(self, pid=None):
        pid = pid or os.getpid()
        self.name = f"gfchaos-{pid}"
        self.a_host, self.a_ns = f"gfa{pid}h", f"gfa{pid}n"
        self.b_host, self.b_ns = f"gfb{pid}h", f"gfb{pid}n"
        self.made = False
        self.forwarders = []
        self.k = None

    def free_k(self, pid):
        used = ip("-o", "-4", "addr", "show").stdout
        for i in range(254):
            k = (pid + i) % 254 + 1
            if f"10.231.{k}." not in used and f"10.232.{k}." not in used:
                return k
        raise NetnsError("no free 10.231.k.0/24 and 10.232.k.0/24")

    @property
    def db_host(self):
        return f"10.231.{self.k}.1"

    @property
    def db_ns(self):
        return f"10.231.{self.k}.2"

    @property
    def host(self):
        """The host's pair-B address: etcd, Redis and c1, c2 listen there too."""
        return f"10.232.{self.k}.1"

    @property
    def inside(self):
        """The namespace's pair-B address: c3 listens there."""
        return f"10.232.{self.k}.2"

    def setup(self):
        self.k = self.free_k(os.getpid())
        self.made = True
        ip("netns", "add", self.name)
        ip("-n", self.name, "link", "set", "lo", "up")
        for host_if, ns_if, net in ((self.a_host, self.a_ns, "10.231"), (self.b_host, self.b_ns, "10.232")):
            ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            ip("link", "set", ns_if, "netns", self.name)
            ip("addr", "add", f"{net}.{self.k}.1/24", "dev", host_if)
            ip("-n", self.name, "addr", "add", f"{net}.{self.k}.2/24", "dev", ns_if)
            ip("link", "set", host_if, "up")
            ip("-n", self.name, "link", "set", ns_if, "up")
        return self

    def exec_prefix(self):
        """`ip netns exec NS` execs the command (same pid: signals reach it)."""
        return ["ip", "netns", "exec", self.name]

    def partition(self, cut):
        ip("link", "set", self.b_host, "down" if cut else "up")

    def forward(self, listen_host, target_port):
        """A TCP forwarder on listen_host:<free port> to 127.0.0.1:target_port; returns its port."""
        f = Forwarder(listen_host, ("127.0.0.1", target_port))
        self.forwarders.append(f)
        return f.port

    def teardown(self):
        for f in self.forwarders:
            f.stop()
        self.forwarders = []
        if not self.made:
            return
        self.made = False
        r = ip("netns", "pids", self.name, check=False)
        for pid in r.stdout.split():
            try:
                os.kill(int(pid), 9)
            except (OSError, ValueError):
                pass
        ip("netns", "del", self.name, check=False)
        for host_if in (self.a_host, self.b_host):
            ip("link", "del", host_if, check=False)  # gone with the namespace, usually


class Forwarder:
    """Accepts on (host, free port) and pipes each connection to target, both ways."""

    def __init__(self, host, target):
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns, self.lock, self.stopping = [], threading.Lock(), False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stopping:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            threading.Thread(target=self.pipe, args=(client, server), daemon=True).start()

    def pipe(self, a, b):
        peers = {a: b, b: a}
        try:
            while not self.stopping:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass
            with self.lock:
                self.conns = [c for c in self.conns if c not in (a, b)]

    def stop(self):
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                    c.close()
                except OSError:
                    pass
