//! Tenant ids: the `X-Scope-OrgID` header every component reads, and the
//! one rule for what a tenant id may be.

/// The header naming the tenant of a request (Cortex/Mimir's).
pub const TENANT_HEADER: &str = "X-Scope-OrgID";

/// Longest tenant id accepted.
pub const MAX_TENANT_LEN: usize = 150;

/// Tenant ids may not start with this: top-level object-storage
/// directories starting with it hold data that is not a tenant's blocks
/// (the ruler's rule groups under [`RULES_DIR`]).
pub const RESERVED_PREFIX: &str = "__";

/// The bucket directory of rule groups uploaded through the ruler's API.
pub const RULES_DIR: &str = "__rules__";

/// Whether a top-level bucket directory is a tenant's (holds blocks).
pub fn is_tenant_dir(name: &str) -> bool {
    !name.starts_with(RESERVED_PREFIX)
}

/// Checks a tenant id: 1–150 characters of `[A-Za-z0-9._-]`, not `.` or
/// `..` nor starting with `__` (tenant ids become object-storage path segments). The message
/// says what is wrong.
pub fn validate_tenant(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("a tenant id must not be empty".into());
    }
    if t.len() > MAX_TENANT_LEN {
        return Err(format!("a tenant id has at most {MAX_TENANT_LEN} characters, this one {}", t.len()));
    }
    if t == "." || t == ".." {
        return Err(format!("{t:?} is not a tenant id"));
    }
    if t.starts_with(RESERVED_PREFIX) {
        return Err(format!("tenant ids starting with {RESERVED_PREFIX:?} are reserved"));
    }
    if let Some(c) = t.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c))) {
        return Err(format!("a tenant id uses only [A-Za-z0-9._-], not {c:?}"));
    }
    Ok(())
}

/// The tenant of a request from its `X-Scope-OrgID` header value (the
/// default tenant without one).
pub fn tenant_from_header(value: Option<&[u8]>) -> Result<String, String> {
    match value {
        None => Ok(crate::DEFAULT_TENANT.to_string()),
        Some(v) => {
            let t = std::str::from_utf8(v).map_err(|_| format!("invalid {TENANT_HEADER}: not UTF-8"))?;
            validate_tenant(t).map_err(|m| format!("invalid {TENANT_HEADER}: {m}"))?;
            Ok(t.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_follow_one_rule() {
        for ok in ["anonymous", "team-a", "a.b_c-9", &"x".repeat(150)] {
            assert_eq!(validate_tenant(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            (".", "not a tenant"),
            ("..", "not a tenant"),
            ("a/b", "'/'"),
            ("a b", "' '"),
            ("__rules__", "reserved"),
        ] {
            assert!(validate_tenant(bad).unwrap_err().contains(why), "{bad}");
        }
        assert!(validate_tenant(&"x".repeat(151)).unwrap_err().contains("at most 150"));
        assert_eq!(tenant_from_header(None).unwrap(), crate::DEFAULT_TENANT);
        assert!(tenant_from_header(Some(b"\xff")).unwrap_err().contains("UTF-8"));
        assert!(tenant_from_header(Some(b"a/b")).unwrap_err().starts_with("invalid X-Scope-OrgID"));
    }
}
