//! Authentication and authorization: password and token hashing, the request
//! principal, and the role policy every handler asks.
mod principal;
mod secrets;

pub use principal::{bearer_token, AuthMethod, Principal, SESSION_COOKIE};
pub use secrets::{hash_password, hash_secret, new_secret, verify_password, TOKEN_PREFIX};
