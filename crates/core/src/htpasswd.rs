//! htpasswd files for basic auth: every format Apache's `htpasswd` writes, parsed at config load and checked in constant time.
//!
//! Formats (by the hash's prefix): `$apr1$` (MD5, `htpasswd`'s default; `$1$` is the same
//! algorithm with glibc's magic), `$2y$`/`$2a$`/`$2b$` (bcrypt, `-B`), `$5$`/`$6$` (SHA-256 and
//! SHA-512 crypt, `-2`/`-5`), `{SHA}` (unsalted SHA-1, `-s`), 13 characters of the crypt
//! alphabet (traditional DES crypt, `-d`) and `{PLAIN}` (nginx's plain-text scheme). `htpasswd -p`
//! writes the password without a prefix, which Apache on Unix does not accept either: such a line
//! is refused unless it happens to look like DES crypt.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10): [`Hash::is_slow`] tells the
//! request path to verify it off the async worker threads.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use md5::{Digest as _, Md5};

use crate::secret::constant_time_eq;

/// One user's stored hash, validated.
#[derive(Clone, PartialEq, Eq)]
pub enum Hash {
    /// `$apr1$salt$hash` or `$1$salt$hash`: MD5-crypt with that magic.
    Md5Crypt { magic: &'static str, text: String },
    /// `$2y$cost$...`
    Bcrypt(String),
    /// `$5$...` or `$6$...`
    ShaCrypt(String),
    /// `{SHA}base64(sha1(password))`: the 20 bytes.
    Sha1(Vec<u8>),
    /// Traditional DES crypt: 2 salt characters and 11 of hash.
    Des(String),
    /// `{PLAIN}password`
    Plain(String),
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the hash itself: it can be attacked offline.
        f.write_str(self.scheme())
    }
}

/// The 64 characters of crypt's base-64 alphabet.
fn crypt_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

impl Hash {
    /// Parses the hash part of an htpasswd line.
    pub fn parse(s: &str) -> Result<Hash, String> {
        if let Some(rest) = s.strip_prefix("$apr1$") {
            return md5_crypt_hash("$apr1$", rest, s);
        }
        if let Some(rest) = s.strip_prefix("$1$") {
            return md5_crypt_hash("$1$", rest, s);
        }
        if ["$2y$", "$2a$", "$2b$"].iter().any(|p| s.starts_with(p)) {
            return s
                .parse::<bcrypt::HashParts>()
                .map(|_| Hash::Bcrypt(s.to_string()))
                .map_err(|e| format!("invalid bcrypt hash: {e}"));
        }
        if s.starts_with("$5$") || s.starts_with("$6$") {
            let fields: Vec<&str> = s[3..].split('$').collect();
            let ok = match fields.as_slice() {
                [rounds, salt, hash] => {
                    rounds
                        .strip_prefix("rounds=")
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                        && crypt_text(salt)
                        && crypt_text(hash)
                }
                [salt, hash] => crypt_text(salt) && crypt_text(hash),
                _ => false,
            };
            return if ok {
                Ok(Hash::ShaCrypt(s.to_string()))
            } else {
                Err("invalid SHA-crypt hash ($5$ or $6$)".into())
            };
        }
        if let Some(b64) = s.strip_prefix("{SHA}") {
            return match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(d) if d.len() == 20 => Ok(Hash::Sha1(d)),
                _ => Err("invalid {SHA} hash (expected the base64 of 20 bytes)".into()),
            };
        }
        if let Some(p) = s.strip_prefix("{PLAIN}") {
            return Ok(Hash::Plain(p.to_string()));
        }
        if s.len() == 13 && s.bytes().all(crypt_char) {
            return Ok(Hash::Des(s.to_string()));
        }
        Err(
            "unknown password hash (htpasswd writes $apr1$, $2y$, $5$, $6$, {SHA} or DES crypt; \
             write a plain-text password as {PLAIN}password)"
                .into(),
        )
    }

    /// The scheme's name, for logs and `GET /v1/config`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Hash::Md5Crypt { magic: "$1$", .. } => "md5-crypt",
            Hash::Md5Crypt { .. } => "apr1",
            Hash::Bcrypt(_) => "bcrypt",
            Hash::ShaCrypt(_) => "sha-crypt",
            Hash::Sha1(_) => "sha1",
            Hash::Des(_) => "des-crypt",
            Hash::Plain(_) => "plain",
        }
    }

    /// Whether checking a password costs milliseconds (bcrypt, SHA-crypt with many rounds):
    /// the request path runs those on a blocking thread.
    pub fn is_slow(&self) -> bool {
        matches!(self, Hash::Bcrypt(_) | Hash::ShaCrypt(_))
    }

    /// Whether `password` is the one this hash was made from; the final comparison takes time
    /// that depends only on the lengths.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Md5Crypt { magic, text } => {
                let salt = md5_salt(&text[magic.len()..]);
                constant_time_eq(md5_crypt(magic, password, salt).as_bytes(), text.as_bytes())
            }
            Hash::Bcrypt(text) => bcrypt::verify(password, text).unwrap_or(false),
            Hash::ShaCrypt(text) if text.starts_with("$5$") => {
                pw_hash::sha256_crypt::verify(password, text)
            }
            Hash::ShaCrypt(text) => pw_hash::sha512_crypt::verify(password, text),
            Hash::Sha1(digest) => {
                let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, password);
                constant_time_eq(d.as_ref(), digest)
            }
            Hash::Des(text) => pw_hash::unix_crypt::verify(password, text),
            Hash::Plain(p) => constant_time_eq(password, p.as_bytes()),
        }
    }
}

fn crypt_text(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(crypt_char)
}

fn md5_crypt_hash(magic: &'static str, rest: &str, whole: &str) -> Result<Hash, String> {
    match rest.split_once('$') {
        Some((salt, hash)) if salt.len() <= 8 && hash.len() == 22 && crypt_text(hash) => {
            Ok(Hash::Md5Crypt {
                magic,
                text: whole.to_string(),
            })
        }
        _ => Err(format!("invalid MD5 hash ({magic}salt$hash)")),
    }
}

/// The salt of `salt$hash`: up to the `$`, at most 8 bytes.
fn md5_salt(rest: &str) -> &[u8] {
    let salt = rest.split('$').next().unwrap_or("").as_bytes();
    &salt[..salt.len().min(8)]
}

/// MD5-crypt (Poul-Henning Kamp's algorithm, as Apache's `apr_md5_encode` and glibc's `$1$` run
/// it): `magic salt $ hash`.
fn md5_crypt(magic: &str, password: &[u8], salt: &[u8]) -> String {
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(password)
        .chain_update(magic.as_bytes())
        .chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alternate[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut digest = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round % 2 == 1 {
            c.update(password);
        } else {
            c.update(digest);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round % 2 == 1 {
            c.update(digest);
        } else {
            c.update(password);
        }
        digest = c.finalize();
    }
    const ORDER: [[usize; 3]; 5] = [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]];
    let mut out = String::with_capacity(magic.len() + salt.len() + 23);
    out.push_str(magic);
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    for [a, b, c] in ORDER {
        let v = u32::from(digest[a]) << 16 | u32::from(digest[b]) << 8 | u32::from(digest[c]);
        push_crypt64(&mut out, v, 4);
    }
    push_crypt64(&mut out, u32::from(digest[11]), 2);
    out
}

/// `n` characters of crypt's base 64 for the low bits of `v`, least significant first.
fn push_crypt64(out: &mut String, mut v: u32, n: usize) {
    const ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for _ in 0..n {
        out.push(char::from(ALPHABET[(v & 0x3f) as usize]));
        v >>= 6;
    }
}

/// Why an htpasswd file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HtpasswdError {
    #[error("line {line}: {why}")]
    Line { line: usize, why: String },
    #[error("no user in the file")]
    Empty,
}

/// The users of one htpasswd file.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Htpasswd {
    users: HashMap<String, Hash>,
}

impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Htpasswd({} users)", self.users.len())
    }
}

impl Htpasswd {
    /// Parses `user:hash` lines; blank lines and `#` comments are skipped. A line without a
    /// colon, an empty user, a user given twice or a hash of no known format is an error naming
    /// its line.
    pub fn parse(text: &str) -> Result<Htpasswd, HtpasswdError> {
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim_end_matches('\r');
            if l.trim().is_empty() || l.trim_start().starts_with('#') {
                continue;
            }
            let err = |why: String| HtpasswdError::Line { line, why };
            let (user, hash) = l
                .split_once(':')
                .ok_or_else(|| err("expected user:hash".into()))?;
            if user.is_empty() {
                return Err(err("empty user name".into()));
            }
            // Apache and nginx ignore anything after a second colon (a comment field).
            let hash = hash.split(':').next().unwrap_or("");
            let hash = Hash::parse(hash).map_err(err)?;
            if users.insert(user.to_string(), hash).is_some() {
                return Err(err(format!("user \"{user}\" given twice")));
            }
        }
        if users.is_empty() {
            return Err(HtpasswdError::Empty);
        }
        Ok(Htpasswd { users })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The stored hash of `user`.
    pub fn user(&self, user: &str) -> Option<&Hash> {
        self.users.get(user)
    }
}

/// The user and password of an `Authorization: Basic ...` header value, if it is one.
pub fn basic_credentials(header: &[u8]) -> Option<(String, Vec<u8>)> {
    let s = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_apache() {
        // `htpasswd -nbm u secret`
        let h = Hash::parse("$apr1$I59/Qs35$SD6EpT3JT8//hPNVxRWwg.").expect("apr1");
        assert!(h.verify(b"secret"));
        assert!(!h.verify(b"Secret"));
        assert!(!h.verify(b""));
        // glibc's `$1$` (openssl passwd -1 -salt 5pZSV9va password)
        let h = Hash::parse("$1$5pZSV9va$azfrPr6af3Fc7dLblQXVa0").expect("md5");
        assert!(h.verify(b"password"));
    }

    #[test]
    fn every_htpasswd_format() {
        let cases = [
            ("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "sha1"),
            ("BM94CyIn9LDAs", "des-crypt"),
            (
                "$2y$05$T4VPJD0uiW8dd.x5aWbAd..Tk9UBqLNuaJIMQqzGOc8ngvxIAoWmG",
                "bcrypt",
            ),
            (
                "$5$fBR927qUM52yRjTr$mBKoDa.43/UQNUjGYGZTAm/VOEy.4fb2fTG0cA5ahe9",
                "sha-crypt",
            ),
            ("$6$dlFLB7DtcWxpgV0g$fppnb8q7hzU3sesAxW4RKpTZlOC78Malhi.hIZfCciphXAqF97Z7b08SJAevz/DFSFm9BQFkVmUuTWGk4F.BW.", "sha-crypt"),
            ("{PLAIN}secret", "plain"),
        ];
        for (text, scheme) in cases {
            let h = Hash::parse(text).expect(text);
            assert_eq!(h.scheme(), scheme);
            assert!(h.verify(b"secret"), "{text}");
            assert!(!h.verify(b"secreT"), "{text}");
        }
    }

    #[test]
    fn bad_files_name_the_line() {
        let e = Htpasswd::parse("# users\nalice:{PLAIN}x\nbob\n").expect_err("no colon");
        assert_eq!(
            e,
            HtpasswdError::Line {
                line: 3,
                why: "expected user:hash".into()
            }
        );
        let e = Htpasswd::parse("a:{PLAIN}x\na:{PLAIN}y\n").expect_err("twice");
        assert!(matches!(e, HtpasswdError::Line { line: 2, .. }));
        let e = Htpasswd::parse("a:secret\n").expect_err("plain without prefix");
        assert!(
            e.to_string().starts_with("line 1: unknown password hash"),
            "{e}"
        );
        assert!(Htpasswd::parse("$2y$05$short").is_err());
        assert!(Htpasswd::parse("a:$2y$05$short").is_err());
        assert_eq!(Htpasswd::parse("\n# none\n"), Err(HtpasswdError::Empty));
        let ok = Htpasswd::parse("a:{PLAIN}x:comment\r\n\nb:BM94CyIn9LDAs\n").expect("ok");
        assert_eq!(ok.len(), 2);
        assert!(ok.user("a").expect("a").verify(b"x"));
    }

    #[test]
    fn basic_header() {
        // "alice:pa:ss"
        let (u, p) = basic_credentials(b"Basic YWxpY2U6cGE6c3M=").expect("creds");
        assert_eq!((u.as_str(), p.as_slice()), ("alice", &b"pa:ss"[..]));
        assert!(basic_credentials(b"basic  YWxpY2U6cGE6c3M= ").is_some());
        assert!(basic_credentials(b"Bearer x").is_none());
        assert!(basic_credentials(b"Basic !!!").is_none());
        assert!(basic_credentials(b"Basic YWxpY2U=").is_none());
    }
}
