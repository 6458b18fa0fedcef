//! The hostile strings the attack suite sends everywhere. A command payload's
//! `{C}` becomes a canary path: if any of them ever runs, the file appears and the
//! suite fails.
use std::path::PathBuf;

pub struct Payload {
    pub kind: &'static str,
    pub name: &'static str,
    pub value: String,
}

/// Where canary files would appear: `/tmp/nanoscale-attack-<pid>-<n>`.
pub fn canary_prefix() -> String {
    format!("nanoscale-attack-{}-", std::process::id())
}

/// Canary files that exist: any is proof a payload ran.
pub fn canaries_found() -> Vec<PathBuf> {
    let prefix = canary_prefix();
    std::fs::read_dir("/tmp")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
                .map(|entry| entry.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Every payload, with its canary path filled in.
pub fn all() -> Vec<Payload> {
    let table: &[(&str, &str, &str)] = &[
        // Command injection: each would create the canary if a shell saw it.
        ("command", "semicolon", "x;touch {C}"),
        ("command", "and", "x && touch {C}"),
        ("command", "or", "x || touch {C}"),
        ("command", "subshell", "$(touch {C})"),
        ("command", "subshell-ifs", "x$(touch${IFS}{C})"),
        ("command", "backticks", "`touch {C}`"),
        ("command", "newline", "x\ntouch {C}"),
        ("command", "pipe", "x|touch {C}"),
        ("command", "redirect", "x>{C}"),
        // Path traversal.
        ("path", "dotdot", "../../../../../../etc/passwd"),
        ("path", "dotdot-deep", "a/../../../../../../etc/shadow"),
        ("path", "absolute", "/etc/shadow"),
        ("path", "nul", "a\u{0}b"),
        ("path", "encoded", "%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
        ("path", "double-encoded", "%252e%252e%252fetc%252fpasswd"),
        ("path", "overlong-utf8", "%c0%ae%c0%ae/etc/passwd"),
        ("path", "backslash", "..\\..\\..\\etc\\passwd"),
        ("path", "file-url", "file:///etc/shadow"),
        ("path", "file-url-dotdot", "file:///tmp/../etc/shadow"),
        ("path", "dot", "."),
        ("path", "dotdot-only", ".."),
        // git option and remote-helper injection, in URLs and refs.
        ("git", "upload-pack", "--upload-pack=touch {C}"),
        ("git", "upload-pack-ifs", "--upload-pack=touch${IFS}{C}"),
        ("git", "config-option", "-c core.sshCommand=touch {C}"),
        ("git", "ext-helper", "ext::sh -c touch% {C}"),
        (
            "git",
            "ext-helper-ifs",
            "ext::sh${IFS}-c${IFS}touch${IFS}{C}",
        ),
        ("git", "fd-helper", "fd::17"),
        (
            "git",
            "ssh-proxycommand",
            "ssh://-oProxyCommand=touch${IFS}{C}/repo",
        ),
        ("git", "scp-option", "-oProxyCommand=touch{C}@host:repo"),
        ("git", "ref-output", "--output={C}"),
        ("git", "ref-reflog", "main@{1}"),
        ("git", "ref-range", "main..HEAD"),
        // Oversize: far past every field's limit, still inside the body limit.
        ("oversize", "64-kib", &"A".repeat(64 * 1024)),
        ("oversize", "long-unicode", &"é".repeat(20 * 1024)),
        // Markup shown by the dashboard: must never become HTML.
        ("html", "script", "<script>document.title='pwned'</script>"),
        (
            "html",
            "img-onerror",
            "<img src=x onerror=\"document.title='pwned'\">",
        ),
        ("html", "attribute-break", "\"><svg onload=alert(1)>"),
        ("html", "javascript-url", "javascript:alert(1)"),
        (
            "html",
            "template",
            "{{constructor.constructor('alert(1)')()}}",
        ),
        // Text that lies about itself or reaches other parsers.
        ("text", "bidi-override", "safe\u{202E}txt.exe"),
        ("text", "terminal-escape", "\u{1b}[2J\u{1b}]0;pwned\u{7}red"),
        ("text", "crlf-header", "x\r\nSet-Cookie: session=attacker"),
        ("text", "sql", "x' OR '1'='1'; DROP TABLE users; --"),
        ("text", "emoji", "🚀 prod"),
        ("text", "empty", ""),
        ("text", "blank", "   "),
    ];
    table
        .iter()
        .enumerate()
        .map(|(index, (kind, name, value))| Payload {
            kind,
            name,
            value: value.replace("{C}", &format!("/tmp/{}{index}", canary_prefix())),
        })
        .collect()
}

/// A string that cannot be sent as JSON text: bodies carrying it are built by
/// replacing this marker's bytes with invalid UTF-8.
pub const INVALID_UTF8_MARKER: &str = "INVALID-UTF8-MARKER";
pub const INVALID_UTF8: &[u8] = b"\xff\xfe\xc3\x28";
