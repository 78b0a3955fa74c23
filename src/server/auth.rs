//! Who may do what (spec §6, §13): with a token configured, publishing and listing orders
//! need `Authorization: Bearer <token>`; with none the server runs open (demo mode). An
//! order's page and stream never need it: its id is the capability.
//!
//! Tokens come from `ADMIN_TOKEN` (one) or `ADMIN_TOKEN_FILE` (one a line, each accepted;
//! re-read on `SIGHUP`, so a token is rotated without a restart). Only their SHA-256 digests
//! are kept, and a presented token is compared by digest, with every accepted one, in
//! constant time: neither its length nor which token it nearly matched shows in the time
//! an answer takes. A token is only ever read from the `Authorization` header.
//!
//! The guard is an extractor, so each handler that needs the token says so in its own
//! signature, whatever router or layer it is mounted under.
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::server::error::AppError;
use crate::server::AppState;

type Digest = [u8; 32];

fn digest(token: &[u8]) -> Digest {
    Sha256::digest(token).into()
}

/// The tokens accepted now.
#[derive(Debug)]
pub struct Tokens {
    /// The file they are read from, when they come from one.
    file: Option<PathBuf>,
    /// `None`: demo mode, no token needed.
    digests: RwLock<Option<Arc<[Digest]>>>,
}

impl Tokens {
    /// No token: demo mode.
    pub fn demo() -> Self {
        Self {
            file: None,
            digests: RwLock::new(None),
        }
    }

    /// The tokens `ADMIN_TOKEN` or `ADMIN_TOKEN_FILE` configure, or demo mode when neither
    /// is set. Refuses, with a sentence naming the setting, a blank token, both set at once,
    /// and a file that cannot be read or holds no token.
    pub fn configured(token: Option<&str>, file: Option<&Path>) -> Result<Self, String> {
        match (token, file) {
            (Some(_), Some(_)) => {
                Err("ADMIN_TOKEN and ADMIN_TOKEN_FILE are both set: set one of them".into())
            }
            (Some(token), None) => {
                let token = non_blank(token)?;
                Ok(Self {
                    file: None,
                    digests: RwLock::new(Some(Arc::new([digest(token.as_bytes())]))),
                })
            }
            (None, Some(file)) => {
                let digests = read_file(file)?;
                if digests.is_empty() {
                    return Err(format!(
                        "ADMIN_TOKEN_FILE ({}) holds no token: write one token a line",
                        file.display()
                    ));
                }
                Ok(Self {
                    file: Some(file.to_owned()),
                    digests: RwLock::new(Some(digests.into())),
                })
            }
            (None, None) => Ok(Self::demo()),
        }
    }

    /// Demo mode: no token is needed.
    pub fn demo_mode(&self) -> bool {
        self.current().is_none()
    }

    fn current(&self) -> Option<Arc<[Digest]>> {
        self.digests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads `ADMIN_TOKEN_FILE` again and accepts exactly what it holds now (a file emptied
    /// accepts no token at all, it never opens the server). Returns how many tokens it
    /// holds; a file that cannot be read keeps the tokens accepted so far. Without a file,
    /// nothing changes.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(file) = &self.file else {
            return Ok(self.current().map_or(0, |digests| digests.len()));
        };
        let digests = read_file(file)?;
        let count = digests.len();
        *self.digests.write().unwrap_or_else(|e| e.into_inner()) = Some(digests.into());
        Ok(count)
    }

    /// Whether `authorization` (the header's value) carries an accepted token: the scheme
    /// `Bearer` in any case, then the token. Always true in demo mode.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(digests) = self.current() else {
            return true;
        };
        let Some(presented) = authorization.and_then(bearer) else {
            return false;
        };
        let presented = digest(presented);
        // Every digest is compared, so that which one matched takes no less time.
        let matched = digests
            .iter()
            .fold(subtle::Choice::from(0), |matched, accepted| {
                matched | presented.ct_eq(accepted)
            });
        bool::from(matched)
    }
}

/// The token of an `Authorization` value: `Bearer` (any case), one or more spaces, then the
/// token; `None` for any other scheme or an empty token.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// A token as configured, refused when empty or blank: an unset variable substituted into
/// `ADMIN_TOKEN=${TOKEN}` must not switch authentication off.
pub fn non_blank(token: &str) -> Result<&str, String> {
    let token = token.trim();
    if token.is_empty() {
        return Err(
            "ADMIN_TOKEN is set but empty or blank, which would leave the server open \
                    to anyone: set it to a secret (e.g. the output of `openssl rand -hex 32`), \
                    or unset it for demo mode"
                .into(),
        );
    }
    Ok(token)
}

/// The digests of the tokens in `file`: each line, without the spaces around it; blank lines
/// are skipped.
fn read_file(file: &Path) -> Result<Vec<Digest>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|err| format!("cannot read ADMIN_TOKEN_FILE ({}): {err}", file.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| digest(line.as_bytes()))
        .collect())
}

/// Proof that the request may publish or list orders: no token is configured, or it carried
/// an accepted bearer token. Otherwise `401` with `WWW-Authenticate: Bearer`.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl Admin {
    /// The guard itself, for a request head read outside axum (the streams' accept loop).
    pub fn check(state: &AppState, authorization: Option<&[u8]>) -> Result<Admin, AppError> {
        if state.tokens.accepts(authorization) {
            Ok(Admin)
        } else {
            Err(AppError::Unauthorized)
        }
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let authorization = parts.headers.get(header::AUTHORIZATION);
        Admin::check(state, authorization.map(|value| value.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_any_case_and_the_token_follows_spaces() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"abc"), None);
    }

    #[test]
    fn a_blank_token_or_two_sources_refuse_to_start() {
        for blank in ["", " ", "\t \n"] {
            let err = Tokens::configured(Some(blank), None).unwrap_err();
            assert!(err.starts_with("ADMIN_TOKEN is set but empty"), "{err}");
        }
        let err = Tokens::configured(Some("a"), Some(Path::new("/nope"))).unwrap_err();
        assert!(err.contains("both set"), "{err}");
        let err = Tokens::configured(None, Some(Path::new("/no/such/file"))).unwrap_err();
        assert!(err.contains("ADMIN_TOKEN_FILE (/no/such/file)"), "{err}");
        assert!(Tokens::configured(None, None).unwrap().demo_mode());
    }

    #[test]
    fn only_the_configured_token_is_accepted_whatever_its_length() {
        let tokens = Tokens::configured(Some(" s3cret "), None).unwrap();
        assert!(!tokens.demo_mode());
        assert!(tokens.accepts(Some(b"Bearer s3cret")));
        assert!(tokens.accepts(Some(b"bearer s3cret")));
        for wrong in [
            &b"Bearer s3cre"[..],
            b"Bearer s3crett",
            b"Bearer ",
            b"Basic s3cret",
            b"s3cret",
            b"",
        ] {
            assert!(!tokens.accepts(Some(wrong)), "{wrong:?}");
        }
        assert!(!tokens.accepts(None));
        assert!(Tokens::demo().accepts(None));
    }

    #[test]
    fn a_token_file_accepts_each_line_and_is_reread_on_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "old\n\n  second \r\n").unwrap();
        let tokens = Tokens::configured(None, Some(&file)).unwrap();
        assert!(tokens.accepts(Some(b"Bearer old")));
        assert!(tokens.accepts(Some(b"Bearer second")));
        assert!(!tokens.accepts(Some(b"Bearer new")));

        std::fs::write(&file, "new\n").unwrap();
        assert_eq!(tokens.reload().unwrap(), 1);
        assert!(tokens.accepts(Some(b"Bearer new")));
        assert!(!tokens.accepts(Some(b"Bearer old")));

        // Unreadable: the tokens so far stay.
        std::fs::remove_file(&file).unwrap();
        assert!(tokens.reload().is_err());
        assert!(tokens.accepts(Some(b"Bearer new")));
        // Emptied: no token at all, never demo mode.
        std::fs::write(&file, "\n").unwrap();
        assert_eq!(tokens.reload().unwrap(), 0);
        assert!(!tokens.accepts(Some(b"Bearer new")));
        assert!(!tokens.demo_mode());

        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let err = Tokens::configured(None, Some(&empty)).unwrap_err();
        assert!(err.contains("holds no token"), "{err}");
    }
}
