//! The session tokens `goflowctl login` keeps, one per server, and which token a call carries.
//!
//! The file is `$XDG_CONFIG_HOME/goflow/credentials` (`~/.config/goflow/credentials` when
//! `XDG_CONFIG_HOME` is unset or not absolute), JSON:
//!
//! ```json
//! {
//!   "servers": {
//!     "http://127.0.0.1:7070": {
//!       "token": "gfs_...",
//!       "user": "alice",
//!       "role": "admin",
//!       "expires_at": 1767225600000
//!     }
//!   }
//! }
//! ```
//!
//! Keys are the addresses of `--server` normalized as every command does (`http://` added when
//! missing, no trailing slash). A login through a list (`--server a:7070,b:7070`) keeps the
//! token under each of its addresses, as the coordinators of one cluster share their sessions;
//! a command uses the token of the first address of its list that has an unexpired one.
//!
//! The directory is made mode 0700 and the file is written mode 0600: a new file is created
//! with that mode next to the old one, then renamed over it, so the file is never readable by
//! others, not even while being written.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    fs,
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The file's name inside the `goflow` configuration directory.
pub const FILE_NAME: &str = "credentials";

/// A stored login at one server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub token: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub role: String,
    /// Epoch milliseconds; 0: unknown (never treated as expired).
    #[serde(default)]
    pub expires_at: i64,
}

impl Session {
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at > 0 && self.expires_at <= now_ms
    }
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub servers: BTreeMap<String, Session>,
}

impl Credentials {
    /// Keeps `session` under each of `servers`.
    pub fn insert(&mut self, servers: &[String], session: &Session) {
        for server in servers {
            self.servers.insert(server.clone(), session.clone());
        }
    }

    /// Forgets the sessions of `servers`; true when there was one.
    pub fn remove(&mut self, servers: &[String]) -> bool {
        let mut removed = false;
        for server in servers {
            removed |= self.servers.remove(server).is_some();
        }
        removed
    }

    /// The first unexpired session among `servers`, in their order, with its server.
    pub fn find(&self, servers: &[String], now_ms: i64) -> Option<(&str, &Session)> {
        servers.iter().find_map(|server| {
            self.servers
                .get_key_value(server)
                .filter(|(_, s)| !s.expired(now_ms) && !s.token.is_empty())
                .map(|(k, s)| (k.as_str(), s))
        })
    }

    /// The first session among `servers`, expired or not (for a hint: who was logged in).
    pub fn any(&self, servers: &[String]) -> Option<&Session> {
        servers.iter().find_map(|server| self.servers.get(server))
    }
}

/// `$XDG_CONFIG_HOME/goflow`, or `$HOME/.config/goflow`. A relative `XDG_CONFIG_HOME` is
/// ignored, as the XDG base directory specification says.
pub fn config_dir(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    absolute(xdg_config_home)
        .or_else(|| absolute(home).map(|h| h.join(".config")))
        .map(|base| base.join("goflow"))
}

/// The credentials file of a configuration directory (`.../goflow`).
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The file in `dir` (the `goflow` directory itself).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Where this process's environment puts it.
    pub fn from_env() -> Result<Self, String> {
        config_dir(std::env::var_os("XDG_CONFIG_HOME"), std::env::var_os("HOME"))
            .map(Self::in_dir)
            .ok_or_else(|| "cannot tell where to keep credentials: set XDG_CONFIG_HOME or HOME".to_string())
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The stored sessions; none when the file does not exist yet.
    pub fn load(&self) -> anyhow::Result<Credentials> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Credentials::default()),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text).with_context(|| {
            format!(
                "cannot read {}: not a goflowctl credentials file (remove it and log in again)",
                path.display()
            )
        })
    }

    /// Replaces the file: written mode 0600 under a temporary name in the same directory
    /// (made mode 0700 if missing), then renamed over the old one.
    pub fn save(&self, credentials: &Credentials) -> anyhow::Result<()> {
        let path = self.path();
        let fail = || format!("cannot write {}", path.display());
        if let Some(parent) = self.dir.parent() {
            fs::create_dir_all(parent).with_context(fail)?;
        }
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && self.dir.is_dir() => {}
            Err(err) => return Err(err).with_context(fail),
        }
        let temp = self.dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
        // A leftover of a killed run with our pid: not ours to trust, start afresh.
        let _ = fs::remove_file(&temp);
        let result = (|| -> io::Result<()> {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            // The umask can only have taken bits away; make it exactly 0600.
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            let mut text = serde_json::to_vec_pretty(credentials).map_err(io::Error::other)?;
            text.push(b'\n');
            file.write_all(&text)?;
            file.sync_all()?;
            fs::rename(&temp, &path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result.with_context(fail)
    }

    /// Reads, changes and writes the file.
    pub fn update<T>(&self, change: impl FnOnce(&mut Credentials) -> T) -> anyhow::Result<T> {
        let mut credentials = self.load()?;
        let result = change(&mut credentials);
        self.save(&credentials)?;
        Ok(result)
    }
}

/// Where the token a call carries comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token` or `GOFLOW_TOKEN` (clap gives the flag precedence over the variable).
    Given,
    /// `goflowctl login`'s session for this server.
    Stored { server: String, user: String },
}

/// The token a call carries, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bearer {
    pub token: String,
    pub source: TokenSource,
}

/// `--token`/`GOFLOW_TOKEN` when given (and not empty), else the stored session of the first of
/// `servers` that has an unexpired one, else none.
pub fn choose_token(
    given: Option<&str>,
    stored: &Credentials,
    servers: &[String],
    now_ms: i64,
) -> Option<Bearer> {
    if let Some(token) = given.map(str::trim).filter(|t| !t.is_empty()) {
        return Some(Bearer {
            token: token.to_string(),
            source: TokenSource::Given,
        });
    }
    stored.find(servers, now_ms).map(|(server, session)| Bearer {
        token: session.token.clone(),
        source: TokenSource::Stored {
            server: server.to_string(),
            user: session.user.clone(),
        },
    })
}

/// A token must fit in gRPC metadata: visible ASCII.
pub fn check_token(token: &str) -> anyhow::Result<()> {
    if token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        anyhow::bail!(
            "the token given with --token / GOFLOW_TOKEN is not a token: visible ASCII characters only"
        )
    }
}

/// True when `path`'s mode lets anyone but its owner read or write it.
pub fn too_open(path: &Path) -> io::Result<Option<u32>> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(token: &str, expires_at: i64) -> Session {
        Session {
            token: token.into(),
            user: "alice".into(),
            role: "admin".into(),
            expires_at,
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_directory_follows_xdg_config_home_then_home() {
        assert_eq!(
            config_dir(Some("/x/conf".into()), Some("/home/a".into())),
            Some(PathBuf::from("/x/conf/goflow"))
        );
        assert_eq!(
            config_dir(None, Some("/home/a".into())),
            Some(PathBuf::from("/home/a/.config/goflow"))
        );
        // Relative or empty XDG_CONFIG_HOME is ignored (XDG base directory specification).
        assert_eq!(
            config_dir(Some("rel".into()), Some("/home/a".into())),
            Some(PathBuf::from("/home/a/.config/goflow"))
        );
        assert_eq!(
            config_dir(Some("".into()), Some("/home/a".into())),
            Some(PathBuf::from("/home/a/.config/goflow"))
        );
        assert_eq!(config_dir(None, None), None);
    }

    #[test]
    fn saved_file_is_0600_in_a_0700_directory_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = config_dir(Some(tmp.path().join("xdg").into()), None).unwrap();
        let store = Store::in_dir(&dir);
        assert_eq!(store.load().unwrap(), Credentials::default(), "no file yet");

        let mut creds = Credentials::default();
        creds.insert(&["http://a:7070".into()], &session("gfs_1", 0));
        store.save(&creds).unwrap();
        assert_eq!(store.path(), tmp.path().join("xdg/goflow/credentials"));
        assert_eq!(mode(&store.path()), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(store.load().unwrap(), creds);
        assert_eq!(too_open(&store.path()).unwrap(), None);

        // A file someone made world-readable is replaced by a 0600 one, not rewritten in place.
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(too_open(&store.path()).unwrap(), Some(0o644));
        store
            .update(|c| c.insert(&["http://b:7070".into()], &session("gfs_2", 0)))
            .unwrap();
        assert_eq!(mode(&store.path()), 0o600);
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["credentials"]);

        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(store.path()).unwrap()).unwrap();
        assert_eq!(json["servers"]["http://a:7070"]["token"], "gfs_1");
        assert_eq!(json["servers"]["http://b:7070"]["user"], "alice");
    }

    #[test]
    fn a_broken_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::in_dir(tmp.path());
        fs::write(store.path(), "not json").unwrap();
        let err = format!("{:#}", store.load().unwrap_err());
        assert!(err.contains(&store.path().display().to_string()), "{err}");
    }

    #[test]
    fn sessions_are_kept_per_server() {
        let a = "http://a:7070".to_string();
        let b = "http://b:7070".to_string();
        let c = "http://c:7070".to_string();
        let mut creds = Credentials::default();
        creds.insert(&[a.clone(), b.clone()], &session("gfs_ab", 0));
        creds.insert(std::slice::from_ref(&c), &session("gfs_c", 0));
        assert_eq!(creds.find(std::slice::from_ref(&b), 1).unwrap().1.token, "gfs_ab");
        assert_eq!(creds.find(std::slice::from_ref(&c), 1).unwrap().1.token, "gfs_c");
        assert_eq!(creds.find(&["http://d:7070".into()], 1), None);
        // A list: the first address with a session.
        let (server, s) = creds
            .find(&["http://d:7070".into(), c.clone(), a.clone()], 1)
            .unwrap();
        assert_eq!((server, s.token.as_str()), (c.as_str(), "gfs_c"));

        assert!(creds.remove(&[a.clone(), b.clone()]));
        assert!(!creds.remove(std::slice::from_ref(&a)));
        assert_eq!(creds.find(&[a, b], 1), None);
        assert_eq!(creds.find(&[c], 1).unwrap().1.token, "gfs_c");
    }

    #[test]
    fn the_given_token_wins_over_a_stored_login() {
        let servers = vec!["http://a:7070".to_string()];
        let mut creds = Credentials::default();
        creds.insert(&servers, &session("gfs_stored", 0));

        let given = choose_token(Some("gft_given"), &creds, &servers, 1).unwrap();
        assert_eq!(given.token, "gft_given");
        assert_eq!(given.source, TokenSource::Given);

        let stored = choose_token(None, &creds, &servers, 1).unwrap();
        assert_eq!(stored.token, "gfs_stored");
        assert_eq!(
            stored.source,
            TokenSource::Stored {
                server: "http://a:7070".into(),
                user: "alice".into()
            }
        );
        // An empty GOFLOW_TOKEN= does not hide the login.
        assert_eq!(
            choose_token(Some(" "), &creds, &servers, 1).unwrap().token,
            "gfs_stored"
        );
        // Another server's login is not used.
        assert_eq!(choose_token(None, &creds, &["http://b:7070".into()], 1), None);
    }

    #[test]
    fn an_expired_session_is_not_sent() {
        let servers = vec!["http://a:7070".to_string()];
        let mut creds = Credentials::default();
        creds.insert(&servers, &session("gfs_old", 1_000));
        assert_eq!(
            choose_token(None, &creds, &servers, 999).unwrap().token,
            "gfs_old"
        );
        assert_eq!(choose_token(None, &creds, &servers, 1_000), None);
        assert_eq!(
            creds.any(&servers).unwrap().user,
            "alice",
            "still a hint of who it was"
        );
    }

    #[test]
    fn tokens_must_be_visible_ascii() {
        assert!(check_token("gft_abc-123.x").is_ok());
        assert!(check_token("gft abc").is_err());
        assert!(check_token("gft_\u{e9}").is_err());
    }
}
