//! Optional Bearer-token auth (JWT): the algorithm is pinned by configuration, `exp` is required,
//! `iss`/`aud` are checked when configured. `/healthz` and `/readyz` stay open.

use actix_web::HttpRequest;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};

use super::errors::ApiError;
use crate::config::Settings;

/// How requests are authenticated.
pub enum Auth {
    Open,
    Jwt(Box<JwtCheck>),
}

/// The key and the rules a token must pass.
pub struct JwtCheck {
    key: DecodingKey,
    validation: Validation,
}

impl Auth {
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Auth> {
        let (key, algorithm) = match (&settings.jwt_secret, &settings.jwt_public_key) {
            (None, None) => return Ok(Auth::Open),
            (Some(secret), _) => (DecodingKey::from_secret(secret.expose().as_bytes()), Algorithm::HS256),
            (None, Some(pem)) => {
                let pem = if pem.trim_start().starts_with("-----BEGIN") {
                    pem.clone().into_bytes()
                } else {
                    std::fs::read(pem).map_err(|e| anyhow::anyhow!("JWT_PUBLIC_KEY: reading {pem}: {e}"))?
                };
                let algorithm = match settings.jwt_algorithm.as_deref() {
                    Some("ES256") => Algorithm::ES256,
                    _ => Algorithm::RS256,
                };
                let key = match algorithm {
                    Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                }
                .map_err(|e| anyhow::anyhow!("JWT_PUBLIC_KEY: not a usable {algorithm:?} public key: {e}"))?;
                (key, algorithm)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = 5;
        // A token issued for later ("not before") is not valid yet, whatever its expiry says.
        validation.validate_nbf = true;
        validation.validate_aud = false;
        if let Some(issuer) = &settings.jwt_issuer {
            validation.set_issuer(&[issuer]);
            validation.set_required_spec_claims(&["exp", "iss"]);
        }
        if let Some(audience) = &settings.jwt_audience {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
        }
        Ok(Auth::Jwt(Box::new(JwtCheck { key, validation })))
    }

    /// Lets the request through, or says why not (401).
    pub fn check(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if let Auth::Open = self {
            return Ok(());
        }
        let header = req
            .headers()
            .get("Authorization")
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| ApiError::Unauthorized("send Authorization: Bearer <token>".into()))?;
        let token = bearer_token(header)
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be: Bearer <token>".into()))?;
        self.check_token(token)
    }

    /// Whether requests need a token at all.
    pub fn is_open(&self) -> bool {
        matches!(self, Auth::Open)
    }

    /// Checks a token given outside a header (the dashboard's WebSocket sends it as a message).
    pub fn check_token(&self, token: &str) -> Result<(), ApiError> {
        self.token_expiry(token).map(drop)
    }

    /// Checks `token` and says when it expires (`exp`, epoch seconds; `None` when auth is off), for
    /// a connection that outlives its check.
    pub fn token_expiry(&self, token: &str) -> Result<Option<i64>, ApiError> {
        let Auth::Jwt(check) = self else { return Ok(None) };
        let JwtCheck { key, validation } = &**check;
        let exp = |claims: serde_json::Value| claims.get("exp").and_then(serde_json::Value::as_i64);
        decode::<serde_json::Value>(token, key, validation).map(|data| exp(data.claims)).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ImmatureSignature => "it is not valid yet (its nbf is in the future)".to_owned(),
                ErrorKind::ExpiredSignature => "it has expired (exp)".to_owned(),
                _ => e.to_string(),
            };
            ApiError::Unauthorized(format!("token refused: {why}"))
        })
    }
}

/// The token of `Bearer <token>`; the scheme name is case-insensitive (RFC 7235 §2.1).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        Settings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!";

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn hs(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    fn status(auth: &Auth, token: Option<&str>) -> Result<(), String> {
        let mut req = TestRequest::default();
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        auth.check(&req.to_http_request()).map_err(|e| e.to_string())
    }

    #[test]
    fn open_when_nothing_is_configured() {
        let auth = Auth::from_settings(&settings(&[])).unwrap();
        assert!(status(&auth, None).is_ok());
    }

    #[test]
    fn hs256_tokens_are_checked_for_signature_expiry_algorithm_issuer_and_audience() {
        let auth = Auth::from_settings(&settings(&[
            ("JWT_SECRET", SECRET),
            ("JWT_ISSUER", "idp"),
            ("JWT_AUDIENCE", "log-analyzer"),
        ]))
        .unwrap();
        let good = json!({"exp": now() + 60, "iss": "idp", "aud": "log-analyzer"});
        assert!(status(&auth, Some(&hs(Algorithm::HS256, SECRET, good.clone()))).is_ok());
        assert!(status(&auth, None).is_err(), "missing");
        assert!(status(&auth, Some("not.a.jwt")).is_err(), "garbage");
        assert!(status(&auth, Some(&hs(Algorithm::HS256, "other", good.clone()))).is_err(), "wrong key");
        assert!(status(&auth, Some(&hs(Algorithm::HS384, SECRET, good.clone()))).is_err(), "wrong alg");
        let expired = json!({"exp": now() - 600, "iss": "idp", "aud": "log-analyzer"});
        assert!(status(&auth, Some(&hs(Algorithm::HS256, SECRET, expired))).is_err(), "expired");
        let no_exp = json!({"iss": "idp", "aud": "log-analyzer"});
        assert!(status(&auth, Some(&hs(Algorithm::HS256, SECRET, no_exp))).is_err(), "no exp");
        let wrong_iss = json!({"exp": now() + 60, "iss": "evil", "aud": "log-analyzer"});
        assert!(status(&auth, Some(&hs(Algorithm::HS256, SECRET, wrong_iss))).is_err(), "iss");
        let wrong_aud = json!({"exp": now() + 60, "iss": "idp", "aud": "someone-else"});
        assert!(status(&auth, Some(&hs(Algorithm::HS256, SECRET, wrong_aud))).is_err(), "aud");
        // alg=none must never pass.
        let none = format!(
            "{}.{}.",
            base64url(br#"{"alg":"none","typ":"JWT"}"#),
            base64url(json!({"exp": now() + 60, "iss": "idp", "aud": "log-analyzer"}).to_string().as_bytes())
        );
        assert!(status(&auth, Some(&none)).is_err(), "alg none");
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let auth = Auth::from_settings(&settings(&[("JWT_SECRET", SECRET)])).unwrap();
        let later = json!({"exp": now() + 3_600, "nbf": now() + 600});
        let err = status(&auth, Some(&hs(Algorithm::HS256, SECRET, later))).unwrap_err();
        assert!(err.contains("not valid yet"), "{err}");
        let now_valid = json!({"exp": now() + 3_600, "nbf": now() - 1});
        assert!(status(&auth, Some(&hs(Algorithm::HS256, SECRET, now_valid))).is_ok());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let auth = Auth::from_settings(&settings(&[("JWT_SECRET", SECRET)])).unwrap();
        let token = hs(Algorithm::HS256, SECRET, json!({"exp": now() + 60}));
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let req = TestRequest::default().insert_header(("Authorization", format!("{scheme} {token}")));
            assert!(auth.check(&req.to_http_request()).is_ok(), "{scheme}");
        }
        for header in [token.clone(), format!("Basic {token}"), "Bearer ".into(), "Bearer".into()] {
            let req = TestRequest::default().insert_header(("Authorization", header.clone()));
            assert!(auth.check(&req.to_http_request()).is_err(), "{header}");
        }
    }

    #[test]
    fn an_hs256_token_is_refused_where_rs256_is_pinned() {
        // The classic confusion attack: an HMAC token "signed" with the public key.
        let dir = std::env::temp_dir().join(format!("la_jwt_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh\nkd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ\n0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg\ncKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc\nmwIDAQAB\n-----END PUBLIC KEY-----\n";
        let path = dir.join("key.pem");
        std::fs::write(&path, pem).unwrap();
        let auth = Auth::from_settings(&settings(&[("JWT_PUBLIC_KEY", path.to_str().unwrap())])).unwrap();
        let forged = hs(Algorithm::HS256, pem, json!({"exp": now() + 60}));
        assert!(status(&auth, Some(&forged)).is_err());
        assert!(status(&auth, None).is_err());
    }

    fn base64url(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}
