//! `$(VAR)` expansion in command, args and env values, with kubelet's rules: a defined variable
//! is replaced, an undefined one stays as written, `$$` is an escaped `$`, and any other `$` is
//! kept literally. Pods written for a real cluster then behave the same here.

/// Expands `$(NAME)` references in `input` with `lookup`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    // An unterminated reference is literal text.
                    out.push('$');
                    out.push_str(after);
                    rest = "";
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
            None => {
                out.push('$');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "POD" => Some("web-0".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn follows_kubelet_rules() {
        assert_eq!(expand("--id=$(POD)", env), "--id=web-0");
        assert_eq!(expand("$(POD).$(POD)", env), "web-0.web-0");
        assert_eq!(expand("x$(EMPTY)y", env), "xy");
        assert_eq!(expand("$(MISSING)", env), "$(MISSING)");
        assert_eq!(expand("$$(POD)", env), "$(POD)");
        assert_eq!(expand("$$$(POD)", env), "$web-0");
        assert_eq!(expand("cost $5", env), "cost $5");
        assert_eq!(expand("end$", env), "end$");
        assert_eq!(expand("$(POD", env), "$(POD");
        assert_eq!(expand("é$(POD)ü", env), "éweb-0ü");
    }
}
