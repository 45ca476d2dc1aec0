//! Logins, sessions and tokens against the fake coordinator.

use std::sync::Mutex;

use crate::credentials;

use super::fake::*;

/// A server with `--auth`.
fn auth_fake() -> Fake {
    Fake {
        require_token: true,
        ..Fake::named("auth:1")
    }
}

/// One goflowctl command, as `execute` runs it but with the credentials under `config` and the
/// password typed being `password`: (result, stdout, stderr).
async fn goflowctl(
    config: &std::path::Path,
    password: &str,
    args: &[&str],
) -> (anyhow::Result<()>, String, String) {
    let cli = crate::tests::parse(args).unwrap();
    let prompts = Mutex::new(Vec::new());
    let read_password = |prompt: &str| {
        prompts.lock().unwrap().push(prompt.to_string());
        Ok(password.to_string())
    };
    let ctx = crate::Context {
        credentials: Ok(credentials::Store::in_dir(config)),
        read_password: &read_password,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = crate::dispatch(cli, &ctx, &mut out, &mut err).await;
    (
        result,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn error_text(result: anyhow::Result<()>, server: &str) -> String {
    crate::error_message(&result.unwrap_err(), server)
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn login_keeps_a_session_that_later_calls_carry_until_logout() {
    let fake = auth_fake();
    let server = serve(fake.clone()).await;
    let config = tempfile::tempdir().unwrap();
    let dir = config.path().join("goflow");

    let (result, out, _) = goflowctl(&dir, "secret", &["--server", &server, "login", "-u", "alice"]).await;
    result.unwrap();
    assert_eq!(out, format!("logged in as alice (admin) at {server}\n"));
    assert_eq!(fake.sent_to("Login"), [""], "Login carries no token");
    assert_eq!(
        fake.sent_to("GetVersion"),
        [""],
        "nor does login's connection probe"
    );
    fake.auth_seen.lock().unwrap().clear();
    let file = dir.join("credentials");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let stored = credentials::Store::in_dir(&dir).load().unwrap();
    let session = &stored.servers[&server];
    assert_eq!(
        (session.token.as_str(), session.user.as_str()),
        (SESSION, "alice")
    );

    // Later calls, of both services, carry the session.
    let (result, out, _) = goflowctl(&dir, "", &["--server", &server, "tasks"]).await;
    result.unwrap();
    assert_eq!(out, "no tasks\n");
    let bearer = format!("Bearer {SESSION}");
    assert_eq!(fake.sent_to("ListTasks"), [bearer.as_str()]);
    assert_eq!(
        fake.sent_to("GetVersion"),
        [bearer.as_str()],
        "the connection probe too"
    );
    let (result, out, _) = goflowctl(&dir, "", &["whoami", "--server", &server]).await;
    result.unwrap();
    assert_eq!(out, format!("alice (admin) at {server}\n"));
    assert_eq!(fake.sent_to("WhoAmI"), [bearer.as_str()]);

    // Another server has no login there.
    let other = serve(auth_fake()).await;
    let (result, _, _) = goflowctl(&dir, "", &["--server", &other, "tasks"]).await;
    assert!(error_text(result, &other).starts_with(&format!("not logged in to {other}: ")));

    let (result, out, _) = goflowctl(&dir, "", &["--server", &server, "logout"]).await;
    result.unwrap();
    assert_eq!(out, format!("logged out of {server}\n"));
    assert_eq!(fake.sent_to("Logout"), [bearer]);
    assert!(
        credentials::Store::in_dir(&dir)
            .load()
            .unwrap()
            .servers
            .is_empty()
    );
    assert_eq!(mode(&file), 0o600);

    let (result, _, _) = goflowctl(&dir, "", &["--server", &server, "tasks"]).await;
    assert_eq!(
        error_text(result, &server),
        format!(
            "not logged in to {server}: run `goflowctl login -u NAME`, or pass a token with \
             --token / GOFLOW_TOKEN"
        )
    );
    let (result, out, _) = goflowctl(&dir, "", &["--server", &server, "logout"]).await;
    result.unwrap();
    assert_eq!(out, format!("not logged in to {server}\n"));
}

#[tokio::test]
async fn a_wrong_password_stores_nothing() {
    let server = serve(auth_fake()).await;
    let config = tempfile::tempdir().unwrap();
    let (result, out, _) = goflowctl(
        config.path(),
        "nope",
        &["--server", &server, "login", "-u", "alice"],
    )
    .await;
    assert_eq!(
        error_text(result, &server),
        format!("login failed at {server}: wrong user or password")
    );
    assert_eq!(out, "");
    assert!(!config.path().join("credentials").exists());
}

#[tokio::test]
async fn a_login_through_a_list_is_kept_for_each_address() {
    let fake = auth_fake();
    let dead = closed_port().await;
    let live = serve(fake.clone()).await;
    let config = tempfile::tempdir().unwrap();
    // As the user typed them: no scheme on one, a trailing slash on the other.
    let typed = format!("{}, {}/", dead.trim_start_matches("http://"), live);
    let (result, out, _) = goflowctl(
        config.path(),
        "secret",
        &["--server", &typed, "login", "-u", "alice"],
    )
    .await;
    result.unwrap();
    assert_eq!(out, format!("logged in as alice (admin) at {dead}, {live}\n"));
    let stored = credentials::Store::in_dir(config.path()).load().unwrap();
    assert_eq!(stored.servers.keys().collect::<Vec<_>>(), {
        let mut keys = vec![&dead, &live];
        keys.sort();
        keys
    });
    // The live one alone finds its session.
    let (result, _, _) = goflowctl(config.path(), "", &["--server", &live, "tasks"]).await;
    result.unwrap();
    assert_eq!(fake.sent_to("ListTasks"), [format!("Bearer {SESSION}")]);
    // Logging out of one forgets the session under every address.
    let (result, _, _) = goflowctl(config.path(), "", &["--server", &live, "logout"]).await;
    result.unwrap();
    assert!(
        credentials::Store::in_dir(config.path())
            .load()
            .unwrap()
            .servers
            .is_empty()
    );
}

#[tokio::test]
async fn token_create_prints_only_the_token_and_the_given_token_wins() {
    let fake = auth_fake();
    let server = serve(fake.clone()).await;
    let config = tempfile::tempdir().unwrap();
    let (result, _, _) = goflowctl(
        config.path(),
        "secret",
        &["--server", &server, "login", "-u", "alice"],
    )
    .await;
    result.unwrap();

    let (result, out, err) = goflowctl(
        config.path(),
        "",
        &[
            "--server",
            &server,
            "--token",
            "gft_admin",
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "operator",
            "--expires",
            "90d",
        ],
    )
    .await;
    result.unwrap();
    assert_eq!(out, "gft_new_ci\n", "stdout holds the token alone");
    // The token given by flag works, with a warning that `ps` shows it.
    assert!(
        err.starts_with("goflowctl: warning: --token shows the token to every user of this machine (ps)"),
        "{err}"
    );
    assert!(err.contains("\ncreated token ci (operator, "), "{err}");
    assert!(err.contains("shown only this once"), "{err}");
    let created = fake.created.lock().unwrap().clone().unwrap();
    assert_eq!(
        (
            created.name.as_str(),
            created.role.as_str(),
            created.expires_in_ms
        ),
        ("ci", "operator", 90 * 86_400_000)
    );
    // --token won over the stored session.
    assert_eq!(fake.sent_to("CreateToken"), ["Bearer gft_admin"]);

    let (result, out, _) = goflowctl(config.path(), "", &["--server", &server, "token", "list"]).await;
    result.unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "ROLE", "CREATED_BY", "CREATED", "EXPIRES", "LAST_USED"]
    );
    assert!(lines[1].starts_with("ci     operator   alice        "), "{out}");
    assert_eq!(fake.sent_to("ListTokens"), [format!("Bearer {SESSION}")]);
    let (result, out, _) = goflowctl(
        config.path(),
        "",
        &["--server", &server, "token", "list", "-o", "json"],
    )
    .await;
    result.unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["name"], "ci");
    assert_eq!(json[0]["expires_at"], serde_json::Value::Null);

    let (result, out, _) =
        goflowctl(config.path(), "", &["--server", &server, "token", "revoke", "ci"]).await;
    result.unwrap();
    assert_eq!(out, "revoked token ci\n");
    let (result, _, _) = goflowctl(
        config.path(),
        "",
        &["--server", &server, "token", "revoke", "nope"],
    )
    .await;
    assert_eq!(error_text(result, &server), r#"not found: no token named "nope""#);
}

#[tokio::test]
async fn refusals_say_what_to_do() {
    let fake = auth_fake();
    let server = serve(fake.clone()).await;
    let config = tempfile::tempdir().unwrap();

    // Too little role: the server's words.
    let (result, out, _) = goflowctl(
        config.path(),
        "",
        &[
            "--server",
            &server,
            "--token",
            "gft_viewer",
            "token",
            "create",
            "--name",
            "x",
            "--role",
            "admin",
        ],
    )
    .await;
    assert_eq!(
        error_text(result, &server),
        "permission denied: CreateToken needs the admin role"
    );
    assert_eq!(out, "");

    // A token the server does not know.
    let (result, _, _) = goflowctl(
        config.path(),
        "",
        &["--server", &server, "--token", "gft_revoked", "tasks"],
    )
    .await;
    assert_eq!(
        error_text(result, &server),
        format!(
            "not logged in to {server}: it refused the token given with --token / GOFLOW_TOKEN \
             (unknown or revoked token); run `goflowctl login -u NAME`, or pass another token"
        )
    );

    // A stored session the server no longer knows: the hint names its user.
    credentials::Store::in_dir(config.path())
        .update(|c| {
            c.insert(
                std::slice::from_ref(&server),
                &credentials::Session {
                    token: "gfs_gone".into(),
                    user: "bob".into(),
                    role: "viewer".into(),
                    expires_at: 0,
                },
            )
        })
        .unwrap();
    let (result, _, _) = goflowctl(
        config.path(),
        "",
        &["--server", &server, "run", "-j", "extract", "-d", "20260101"],
    )
    .await;
    assert_eq!(
        error_text(result, &server),
        format!(
            "not logged in to {server}: it refused the session of bob (unknown or revoked token); \
             run `goflowctl login -u bob`, or pass a token with --token / GOFLOW_TOKEN"
        )
    );
}
