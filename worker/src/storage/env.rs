//! The environment variables that configure remote stores, captured in one value so a store
//! can be opened with settings other than this process's own (tests, tools).

use std::collections::BTreeMap;

/// Prefixes of the variables that configure a remote store.
const PREFIXES: &[&str] = &["AWS_", "AZURE_", "CAIRN_", "GOOGLE_", "HADOOP_"];

/// Store settings: variable name -> value, empty values dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreEnv {
    vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for StoreEnv {
    // Names only: the values hold credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl StoreEnv {
    /// The store variables of this process's environment.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// Store variables from explicit pairs (names without a store prefix are ignored).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(k, v)| !v.is_empty() && PREFIXES.iter().any(|p| k.starts_with(p)))
            .collect();
        StoreEnv { vars }
    }

    /// One variable's value.
    pub fn get(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }

    /// Every variable whose name starts with `prefix`.
    pub(crate) fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.vars
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
