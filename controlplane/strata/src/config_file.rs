//! `--config.file`: a YAML map whose keys are flag names without the
//! leading dashes (`raft.node-id: 1`, `endpoint: [a, b]`). Its entries are
//! turned into flags placed before the command line's own, so flags given
//! on the command line win.

use anyhow::{Context, bail};

/// Expands `--config.file FILE` (or `--config.file=FILE`) in `args`.
pub fn expand(args: Vec<String>) -> anyhow::Result<Vec<String>> {
    let mut file = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--config.file" {
            file = Some(it.next().context("--config.file needs a path")?);
        } else if let Some(p) = a.strip_prefix("--config.file=") {
            file = Some(p.to_string());
        } else {
            rest.push(a);
        }
    }
    let Some(path) = file else { return Ok(rest) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {path}"))?;
    let from_file = flags_from_yaml(&text).with_context(|| format!("invalid config file {path}"))?;
    // argv[0] and the subcommand stay first.
    let split = rest.len().min(2);
    let mut out: Vec<String> = rest[..split].to_vec();
    out.extend(from_file);
    out.extend_from_slice(&rest[split..]);
    Ok(out)
}

fn scalar(v: &serde_yaml::Value, key: &str) -> anyhow::Result<String> {
    Ok(match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        _ => bail!("value of `{key}` must be a string, number, boolean or a list of them"),
    })
}

pub fn flags_from_yaml(text: &str) -> anyhow::Result<Vec<String>> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text)?;
    let mut out = Vec::new();
    let serde_yaml::Value::Mapping(map) = doc else {
        if doc.is_null() {
            return Ok(out);
        }
        bail!("the file must be a map of flag names to values");
    };
    for (k, v) in map {
        let key = k.as_str().context("keys must be flag names")?.to_string();
        match v {
            serde_yaml::Value::Sequence(items) => {
                for item in items {
                    out.push(format!("--{key}"));
                    out.push(scalar(&item, &key)?);
                }
            }
            v => {
                out.push(format!("--{key}"));
                out.push(scalar(&v, &key)?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_becomes_flags_before_the_command_line() {
        let flags = flags_from_yaml("raft.node-id: 2\nendpoint: [a, b]\nquery.partial: true\n").unwrap();
        assert_eq!(flags, ["--raft.node-id", "2", "--endpoint", "a", "--endpoint", "b", "--query.partial", "true"]);
        assert!(flags_from_yaml("x: {a: 1}").is_err());
        assert!(flags_from_yaml("- a").is_err());
    }
}
