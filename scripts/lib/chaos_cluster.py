"""The processes of one scripts/chaos run: etcd, Redis, coordinators, agents on loopback, each
restartable on the same ports; and the faults injected into them.

Reuses scripts/bench's helpers (Database, free_port, tail, http_get), loaded from its file so
that bench stays one self-contained script."""
import http.client, importlib.machinery, importlib.util, json, os, secrets, signal, socket, subprocess, time
from urllib.parse import urlsplit, urlunsplit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_bench():
    path = os.path.join(ROOT, "scripts", "bench")
    loader = importlib.machinery.SourceFileLoader("goflow_bench", path)
    spec = importlib.util.spec_from_loader("goflow_bench", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


bench = _load_bench()
Failure, Database, free_port, tail, http_get = (bench.Failure, bench.Database, bench.free_port, bench.tail,
                                                bench.http_get)

LEASE_TTL = 3        # the leader's lease, seconds (etcd's and the database's)
WORKER_TIMEOUT = 10  # agent silence before it is declared dead, seconds: its 3/4, when an agent
                     # stops its own tries, must stay well above a leader takeover (lease + election)
AGENT_SLOTS = 4
QUICK = 15           # one goflowctl call, seconds


def log(*parts):
    import sys
    print(*parts, file=sys.stderr, flush=True)


class Proc:
    """One long-running process, restartable with the same command line; its output appended
    to NAME.log in the run's folder."""

    def __init__(self, name, cmd, env, folder):
        self.name, self.cmd, self.env, self.folder = name, cmd, env, folder
        self.log = os.path.join(folder, name + ".log")
        self.p, self.stopped = None, False
        self.partitioned = False  # cut off by the network_partition fault (its namespace's link down)

    def start(self):
        with open(self.log, "a") as out:
            out.write(f"---- chaos: start at {time.time():.3f}\n")
            out.flush()
            self.p = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=self.env, cwd=self.folder, start_new_session=True)
        self.stopped = False
        return self

    @property
    def pid(self):
        return self.p.pid if self.p else None

    def running(self):
        return self.p is not None and self.p.poll() is None

    def signal(self, sig):
        if self.running():
            os.kill(self.p.pid, sig)
            if sig == signal.SIGSTOP:
                self.stopped = True
            elif sig == signal.SIGCONT:
                self.stopped = False

    def wait(self, within):
        try:
            self.p.wait(timeout=within)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self):
        if self.running():
            if self.stopped:
                self.signal(signal.SIGCONT)
            self.p.kill()
            self.p.wait()

    def stop(self, within=20):
        """SIGTERM, then SIGKILL after `within` seconds."""
        if not self.running():
            return
        if self.stopped:
            self.signal(signal.SIGCONT)
        self.p.terminate()
        if not self.wait(within):
            log(f"chaos: {self.name} (pid {self.p.pid}) did not stop within {within} s of SIGTERM: killed")
            self.kill()


def wait_until(what, within, probe, step=0.2):
    deadline = time.time() + within
    while True:
        got = probe()
        if got:
            return got
        if time.time() > deadline:
            raise Failure(f"waited {within} s for {what}")
        time.sleep(step)


class Cluster:
    def __init__(self, args, folder, db_name):
        self.args, self.folder = args, folder
        self.bin = args.bin_dir
        self.db = None
        self.db_name = db_name
        self.etcd = self.redis = None
        self.coordinators, self.agents = [], []
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("GOFLOW_", "OTEL_")) and k != "RUST_LOG"}
        self.env["XDG_CONFIG_HOME"] = os.path.join(folder, "config")
        # Each agent presents its own token (goflow agent-token), the coordinators no shared secret.
        self.agent_tokens = {}
        self.sqlite = args.database == "sqlite"
        # With a network namespace (chaos_netns.Netns, set before start()): c3 runs inside it,
        # everything listens on the host's pair-B address too, and the cluster runs with --auth
        # (goflow serves beyond loopback only with it): goflowctl carries an admin API token.
        self.netns = None
        self.ctl_env = dict(self.env)
        self.password = secrets.token_hex(12)

    @property
    def host(self):
        """The address the host's services are reached at from c3's namespace (and by all)."""
        return self.netns.host if self.netns else "127.0.0.1"

    # ---- starting ----

    def start(self):
        self.db = Database(self.args.database, self.folder, self.db_name)
        if self.netns:
            # c3 reaches the database (on 127.0.0.1 only) through a forwarder on pair A.
            url = urlsplit(self.db.url)
            port = self.netns.forward(self.netns.db_host, url.port or (5432 if self.db.kind == "postgres" else 3306))
            netloc = url.netloc.rsplit("@", 1)
            netloc = (netloc[0] + "@" if len(netloc) == 2 else "") + f"{self.netns.db_host}:{port}"
            self.db_url_ns = urlunsplit(url._replace(netloc=netloc))
            self.add_admin()
        self.start_redis()
        if not self.sqlite:
            self.start_etcd()
        # sqlite: one coordinator and a database-lease standby; otherwise three through etcd.
        for i in range(2 if self.sqlite else 3):
            self.add_coordinator(i)
            if i == 0:
                self.wait_ready(self.coordinators[0])
                if self.netns:
                    self.get_token()
                wait_until("the first coordinator to lead", 60, lambda: self.leaders() == [0])
        for c in self.coordinators[1:]:
            self.wait_ready(c)
        for i in range(3):
            self.add_agent(i)
        ids = [a.agent_id for a in self.agents]
        wait_until(f"agents {ids} to register", 60, lambda: set(ids) <= self.alive_agents(), step=0.5)

    def add_admin(self):
        """`goflow user add chaos --role admin`, on the run's database (before any coordinator)."""
        r = subprocess.run([os.path.join(self.bin, "goflow"), "user", "add", "chaos", "--role", "admin",
                            "--password-stdin", "--database-url", self.db.url],
                           input=self.password + "\n", env=self.env, capture_output=True, text=True,
                           timeout=120, cwd=self.folder)
        if r.returncode != 0:
            raise Failure(f"goflow user add: {r.stderr.strip()}")

    def agent_token(self, agent_id):
        """`goflow agent-token create --id AGENT`, once per agent, on the run's database."""
        if agent_id not in self.agent_tokens:
            r = subprocess.run([os.path.join(self.bin, "goflow"), "agent-token", "create", "--id", agent_id,
                                "--replace", "--database-url", self.db.url],
                               env=self.env, capture_output=True, text=True, timeout=120, cwd=self.folder)
            if r.returncode != 0:
                raise Failure(f"goflow agent-token create: {r.stderr.strip()}")
            self.agent_tokens[agent_id] = r.stdout.strip()
        return self.agent_tokens[agent_id]

    def get_token(self):
        """`goflowctl login`, then an API token for every later goflowctl call (GOFLOW_TOKEN)."""
        c1 = self.coordinators[0].url

        def login():
            r = subprocess.run([os.path.join(self.bin, "goflowctl"), "--server", c1, "login", "-u", "chaos"],
                               input=self.password + "\n", env=self.env, capture_output=True, text=True,
                               timeout=QUICK, cwd=self.folder)
            return r.returncode == 0 or log(f"chaos: goflowctl login: {r.stderr.strip()}")
        wait_until("goflowctl login", 60, login, step=1)

        def token():
            r = subprocess.run([os.path.join(self.bin, "goflowctl"), "--server", c1, "token", "create",
                                "--name", "chaos", "--role", "admin"], env=self.env, capture_output=True,
                               text=True, timeout=QUICK, cwd=self.folder)
            return r.stdout.strip() if r.returncode == 0 else log(f"chaos: goflowctl token create: {r.stderr.strip()}")
        self.ctl_env["GOFLOW_TOKEN"] = wait_until("goflowctl token create", 60, token, step=1)

    def start_redis(self):
        if self.redis is None:
            self.redis_port = free_port()
            bind = "127.0.0.1" + (f" {self.netns.host}" if self.netns else "")
            self.redis = Proc("redis", ["redis-server", "--bind", bind, "--protected-mode", "no",
                                        "--port", str(self.redis_port),
                                        "--save", "", "--appendonly", "no", "--dir", self.folder],
                              self.env, self.folder)
        self.redis.start()

        def pong():
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        wait_until("redis-server to answer", 20, pong)

    @property
    def redis_url(self):
        return f"redis://{self.host}:{self.redis_port}"

    def start_etcd(self):
        if self.etcd is None:
            self.etcd_port, peer = free_port(), free_port()
            client, peer_url = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{peer}"
            if self.netns:
                client += f",http://{self.netns.host}:{self.etcd_port}"
            env = {k: v for k, v in self.env.items() if k != "ETCDCTL_API"}
            self.etcd = Proc("etcd", ["etcd", "--name", "chaos", "--data-dir", os.path.join(self.folder, "etcd-data"),
                                      "--listen-client-urls", client, "--advertise-client-urls", client,
                                      "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                                      "--initial-cluster", f"chaos={peer_url}", "--logger", "zap",
                                      "--log-outputs", "stderr"], env, self.folder)
        self.etcd.start()

        def healthy():
            try:
                status, _, body, _ = http_get(self.etcd_port, "/health", timeout=2)
                return status == 200 and b'"health":"true"' in body
            except OSError:
                return False
        wait_until("etcd to be healthy", 30, healthy)

    def add_coordinator(self, i):
        g, h = free_port(), free_port()
        env = dict(self.env, GOFLOW_HEARTBEAT_INTERVAL="1")
        inside = self.netns is not None and i == 2  # c3, in the namespace
        addr = self.netns.inside if inside else self.host
        cmd = [os.path.join(self.bin, "goflow"), "coordinator",
               "--database-url", self.db_url_ns if inside else self.db.url,
               "--grpc-listen", f"{addr}:{g}", "--http-listen", f"{addr if inside else '127.0.0.1'}:{h}",
               "--redis-url", self.redis_url, "--data-dir", os.path.join(self.folder, f"c{i + 1}"),
               "--lease-ttl", str(LEASE_TTL), "--worker-timeout", str(WORKER_TIMEOUT)]
        if self.etcd:
            cmd += ["--etcd-endpoints", f"http://{self.host}:{self.etcd_port}"]
        if self.netns:
            # Beyond loopback with --auth goflow wants TLS; the namespace's veth pair is private.
            cmd += ["--auth", "--insecure-plaintext", "--advertise-address", f"{addr}:{g}"]
        if inside:
            cmd = self.netns.exec_prefix() + cmd
        c = Proc(f"c{i + 1}", cmd, env, self.folder)
        c.grpc, c.http, c.http_host = g, h, addr if inside else "127.0.0.1"
        c.url = f"http://{addr}:{g}"
        self.coordinators.append(c.start())

    def add_agent(self, i):
        urls = [c.url for c in self.coordinators]
        urls = urls[i % len(urls):] + urls[:i % len(urls)]
        agent_id = f"chaos-a{i + 1}"
        cmd = [os.path.join(self.bin, "goflow"), "agent", "--coordinator", ",".join(urls),
               "--redis-url", self.redis_url, "--slots", str(AGENT_SLOTS), "--id", agent_id,
               "--heartbeat-interval", "1"]
        a = Proc(f"a{i + 1}", cmd, dict(self.env, GOFLOW_AGENT_TOKEN=self.agent_token(agent_id)), self.folder)
        a.agent_id = agent_id
        self.agents.append(a.start())

    def wait_ready(self, c, within=90):
        def ready():
            if not c.running():
                raise Failure(f"{c.name} exited ({c.p.returncode}); its log ends:\n{tail(c.log)}")
            try:
                conn = http.client.HTTPConnection(c.http_host, c.http, timeout=3)
                try:
                    conn.request("GET", "/readyz")
                    return conn.getresponse().status == 200
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                return False
        wait_until(f"{c.name} to be ready", within, ready)

    # ---- asking ----

    def servers(self):
        """The coordinators that can answer now (running and not stopped), as --server."""
        return ",".join(c.url for c in self.coordinators if c.running() and not c.stopped and not c.partitioned)

    def ctl(self, *args, within=QUICK):
        """goflowctl through the answering coordinators: CompletedProcess, or None on timeout."""
        servers = self.servers()
        if not servers:
            return None
        cmd = [os.path.join(self.bin, "goflowctl"), "--server", servers, *args]
        try:
            return subprocess.run(cmd, env=self.ctl_env, capture_output=True, text=True, timeout=within,
                                  stdin=subprocess.DEVNULL, cwd=self.folder)
        except subprocess.TimeoutExpired:
            return None

    def ctl_json(self, *args, within=QUICK):
        r = self.ctl(*args, "-o", "json", within=within)
        if r is None or r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout or "null")
        except ValueError:
            return None

    def coordinators_list(self):
        return self.ctl_json("coordinators", within=8)

    def leaders(self, listed=None):
        listed = listed if listed is not None else self.coordinators_list()
        if listed is None:
            return None
        out = []
        for row in listed:
            if row.get("leader"):
                addr = (row.get("address") or "").replace("http://", "").rstrip("/")
                out += [i for i, c in enumerate(self.coordinators) if c.url.endswith("//" + addr)]
        return sorted(out)

    def alive_agents(self):
        listed = self.ctl_json("agents") or []
        return {a.get("id") for a in listed if a.get("state") == "alive"}

    # ---- healing and stopping ----

    def heal(self):
        """Everything stopped is continued, everything cut off joined again and everything dead
        started again."""
        for p in self.coordinators:
            if p.partitioned:
                self.netns.partition(False)
                p.partitioned = False
        for p in self.coordinators + self.agents + [x for x in (self.redis, self.etcd) if x]:
            if p.stopped:
                p.signal(signal.SIGCONT)
        if not self.redis.running():
            self.start_redis()
        if self.etcd and not self.etcd.running():
            self.start_etcd()
        for p in self.coordinators + self.agents:
            if not p.running():
                log(f"chaos: heal: starting {p.name} again")
                p.start()

    def stop(self):
        for p in reversed(self.coordinators + self.agents):
            if p.running() and p.stopped:
                p.signal(signal.SIGCONT)
        for p in self.agents + self.coordinators + [x for x in (self.redis, self.etcd) if x]:
            p.stop(within=25)
        if self.netns:
            self.netns.teardown()
        if self.db is not None:
            self.db.drop()

    def logs(self, lines=15):
        return "".join(f"\n--- {p.log} (last {lines} lines)\n{tail(p.log, lines)}"
                       for p in self.coordinators + self.agents)
