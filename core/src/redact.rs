//! Secrets out of URLs before anything shows them (issue 20): database, Redis, etcd, SMTP and
//! webhook URLs may carry a password or a token, and none of it may reach a log line, an
//! error, a metric, a trace or a page.
//!
//! The URL is parsed with the `url` crate (WHATWG parsing, the same as reqwest's): its
//! password becomes `***`, and so does the value of every query parameter whose name says it
//! is a credential (`password`, `token`, `access_token`, `key`, `secret`, `sign`, ...; DingTalk,
//! WeCom and others put their webhook token there). A text that does not parse as a URL with a
//! host (a mistyped scheme such as `postgres//user:pw@host`) is shown only from its last `@`
//! on: whatever stood before it may be a password.

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// `url` with its password and credential-like query values replaced by `***`; unchanged when
/// it holds none.
pub fn redact_url(url: &str) -> String {
    let parsed = match url::Url::parse(url.trim()) {
        Ok(parsed) if parsed.host().is_some() && !parsed.cannot_be_a_base() => parsed,
        // Not a URL with a host, so no parser can say where a password would end.
        _ => return mask_before_at(url),
    };
    let mut redacted = parsed.clone();
    let mut changed = false;
    if parsed.password().is_some() {
        // Fails only for URLs without a host, excluded above.
        let _ = redacted.set_password(Some(MASK));
        changed = true;
    }
    if parsed.query_pairs().any(|(name, _)| is_credential_name(&name)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_credential_name(&name) {
                    MASK.to_string()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        redacted.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if changed {
        redacted.to_string()
    } else {
        url.to_string()
    }
}

/// Whether a URL holds a secret that [`redact_url`] would hide (a password, a token parameter,
/// or, for a text that is not a URL, anything before an `@`).
pub fn has_secret(url: &str) -> bool {
    redact_url(url) != url
}

/// `text` with every appearance of `url` replaced by its redacted form, and of its password
/// too (as written and percent-decoded): for error messages of libraries that quote the URL
/// they were given.
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    for secret in secrets_of(url) {
        out = out.replace(&secret, MASK);
    }
    out
}

/// The password of `url` (raw and percent-decoded) and its credential query values, each at
/// least 3 characters long (a shorter one would mask unrelated letters of a message).
fn secrets_of(url: &str) -> Vec<String> {
    let mut secrets = vec![];
    match url::Url::parse(url.trim()) {
        Ok(parsed) if parsed.host().is_some() => {
            if let Some(password) = parsed.password() {
                secrets.push(password.to_string());
                if let Ok(decoded) = percent_decode(password) {
                    secrets.push(decoded);
                }
            }
            secrets.extend(
                parsed
                    .query_pairs()
                    .filter(|(name, _)| is_credential_name(name))
                    .map(|(_, value)| value.into_owned()),
            );
        }
        _ => {
            if let Some((before, _)) = url.rsplit_once('@') {
                let userinfo = before.rsplit(['/', ':']).next().unwrap_or(before);
                secrets.push(userinfo.to_string());
            }
        }
    }
    secrets.retain(|s| s.chars().count() >= 3);
    secrets
}

fn percent_decode(text: &str) -> Result<String, std::string::FromUtf8Error> {
    // `url` decodes for us: a path segment holding the text comes back decoded.
    let decoded: Vec<u8> = url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8(decoded)
}

/// Query parameter names that carry credentials: any that mentions a password, token, key,
/// secret, signature or authentication (`sslkey` is only a path, masked all the same: a
/// hidden path costs less than a shown token).
fn is_credential_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "token",
        "key",
        "secret",
        "sign",
        "sig",
        "auth",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// A text that is not a URL with a host: only what follows its last `@`.
fn mask_before_at(text: &str) -> String {
    match text.rsplit_once('@') {
        Some((_, after)) => format!("{MASK}@{after}"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_and_the_rest_kept() {
        assert_eq!(
            redact_url("postgres://goflow:s3cr3t@db:5432/goflow?sslmode=verify-full"),
            "postgres://goflow:***@db:5432/goflow?sslmode=verify-full"
        );
        assert_eq!(
            redact_url("redis://:pw-1234@redis:6379/0"),
            "redis://:***@redis:6379/0"
        );
        assert_eq!(
            redact_url("rediss://default:p%40ss@cache.internal:6380"),
            "rediss://default:***@cache.internal:6380"
        );
        assert_eq!(
            redact_url("smtps://alerts:hunter22@smtp.example.com:465"),
            "smtps://alerts:***@smtp.example.com:465"
        );
        assert_eq!(
            redact_url("mysql://root@127.0.0.1:3306/goflow"),
            "mysql://root@127.0.0.1:3306/goflow"
        );
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("localhost:6379"), "localhost:6379");
        assert_eq!(
            redact_url("sqlite://goflow-data/goflow.db"),
            "sqlite://goflow-data/goflow.db"
        );
    }

    #[test]
    fn token_parameters_are_masked() {
        assert_eq!(
            redact_url("https://oapi.dingtalk.com/robot/send?access_token=abcdef123456"),
            "https://oapi.dingtalk.com/robot/send?access_token=***"
        );
        assert_eq!(
            redact_url("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc-123&debug=1"),
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=***&debug=1"
        );
        assert_eq!(
            redact_url("postgres://db/goflow?user=goflow&password=s3cr3t"),
            "postgres://db/goflow?user=goflow&password=***"
        );
    }

    #[test]
    fn a_mistyped_scheme_shows_nothing_before_the_at() {
        for typo in [
            "postgres//goflow:s3cr3t@db:5432/goflow",
            "postgres:/goflow:s3cr3t@db:5432/goflow",
            "goflow:s3cr3t@db:5432/goflow",
            "postgres:goflow:s3cr3t@db",
        ] {
            let shown = redact_url(typo);
            assert!(!shown.contains("s3cr3t"), "{typo} -> {shown}");
            assert!(
                shown.ends_with("@db:5432/goflow") || shown.ends_with("@db"),
                "{shown}"
            );
        }
    }

    #[test]
    fn has_secret_tells_urls_with_credentials() {
        assert!(has_secret("redis://:pw@h:1"));
        assert!(has_secret("https://h/x?token=t"));
        assert!(!has_secret("redis://h:1"));
        assert!(!has_secret("postgres://goflow@db/goflow"));
    }

    #[test]
    fn scrub_removes_the_url_and_its_password_from_a_message() {
        let url = "redis://:p%40ssw0rd@cache:6379";
        let message = format!("cannot connect to {url}: auth failed for p@ssw0rd (p%40ssw0rd)");
        let scrubbed = scrub(&message, url);
        assert!(!scrubbed.contains("ssw0rd"), "{scrubbed}");
        assert!(scrubbed.contains("redis://:***@cache:6379"), "{scrubbed}");
        let typo = "postgres//u:topsecret@db/x";
        assert!(!scrub(&format!("bad: {typo}"), typo).contains("topsecret"));
    }
}
