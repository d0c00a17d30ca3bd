//! Helpers shared by the hand-written deserializers of the `type:`-tagged sections
//! ([`crate::InputSpec`], [`crate::OutputSpec`]).

use serde::de::{self, Deserialize, MapAccess};

/// Reads the value of `key` into `slot`, rejecting a key that appears twice in one map the way
/// serde's derived code does.
pub(crate) fn set_once<'de, T, A>(
    slot: &mut Option<T>,
    key: &'static str,
    map: &mut A,
) -> Result<(), A::Error>
where
    T: Deserialize<'de>,
    A: MapAccess<'de>,
{
    if slot.is_some() {
        return Err(de::Error::duplicate_field(key));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// Formats accepted names as serde does in its messages: `` `a`, `b`, `c` ``.
pub(crate) fn expected_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every name of `lists`, each once, in order of first appearance: the keys a section accepts
/// whatever its type, for messages about a key written before (or without) `type:`.
pub(crate) fn union_of(
    lists: impl IntoIterator<Item = &'static [&'static str]>,
) -> Vec<&'static str> {
    let mut all: Vec<&'static str> = Vec::new();
    for &name in lists.into_iter().flatten() {
        if !all.contains(&name) {
            all.push(name);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_union_keeps_the_first_appearance_of_each_name() {
        let lists: [&'static [&'static str]; 3] = [&["type", "a"], &["type"], &["type", "b", "a"]];
        assert_eq!(union_of(lists), ["type", "a", "b"]);
    }
}
