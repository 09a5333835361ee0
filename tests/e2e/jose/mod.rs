//! Token forms beyond a cached signature (issue 15): encrypted tokens (JWE) checked by an
//! independent JOSE implementation (Python joserfc), ES512 checked by the openssl CLI, JWK
//! signing keys of every type, recipient keys from keygen, and tokens signed per request
//! (Atlassian `qsh`, Coinbase `uri`, DPoP proofs) checked by servers that recompute them.

mod atlassian;
mod check;
mod coinbase;
mod dpop;
mod es512;
mod examples;
mod jwe;
mod jwk_keys;
mod keygen;
mod per_request;
