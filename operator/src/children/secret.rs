//! The Secret holding the job's control-API bearer token. The token is generated once by the
//! operator (fetch step) and the Secret is only ever created, never re-applied, so a running
//! job's token does not change under it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::Owner;

/// Key of the token in the Secret (and file name in the pod).
pub use cairn_contract::pod::TOKEN_KEY;

/// The token Secret.
pub fn secret(owner: &Owner, token: &str) -> Secret {
    Secret {
        metadata: owner.child_meta(owner.secret_name()),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(TOKEN_KEY.into(), token.into())])),
        ..Default::default()
    }
}
