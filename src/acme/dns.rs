//! DNS-01 through an exec hook: `HOOK present|cleanup RECORD VALUE`, so any DNS provider works.
//!
//! Like lego's exec provider: RECORD is the fully qualified `_acme-challenge.<name>.` (trailing
//! dot), VALUE the TXT content. `present` must return once the record is visible to the CA (exit
//! 0), and must add the value rather than replace others (a name and its wildcard share a record).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::AcmeError;

/// The TXT record name for a DNS-01 challenge of `name` (a wildcard's base name).
pub fn record_name(name: &str) -> String {
    format!(
        "_acme-challenge.{}.",
        name.trim_start_matches("*.").trim_end_matches('.')
    )
}

/// Runs the hook once; a non-zero exit, a failure to start or the timeout is an error.
pub async fn run(
    hook: &Path,
    action: &str,
    record: &str,
    value: &str,
    timeout: Duration,
) -> Result<(), AcmeError> {
    let child = Command::new(hook)
        .arg(action)
        .arg(record)
        .arg(value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| AcmeError::DnsHook(format!("cannot run {}: {e}", hook.display())))?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(AcmeError::DnsHook(format!("{action} {record}: {e}"))),
        Err(_) => {
            return Err(AcmeError::DnsHook(format!(
                "{action} {record}: no answer within {timeout:?} (killed)"
            )))
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        log::debug!("acme: dns hook {action} {record}: ok {}", stderr.trim());
        Ok(())
    } else {
        Err(AcmeError::DnsHook(format!(
            "{action} {record} exited with {}: {}",
            output.status,
            stderr.trim().chars().take(500).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names() {
        assert_eq!(record_name("a.example"), "_acme-challenge.a.example.");
        assert_eq!(record_name("*.example"), "_acme-challenge.example.");
    }

    #[tokio::test]
    async fn hook_failures_are_errors_with_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hook = dir.path().join("hook.sh");
        std::fs::write(&hook, "#!/bin/sh\necho \"no $1 for $2\" >&2\nexit 3\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = run(
            &hook,
            "present",
            "_acme-challenge.a.",
            "v",
            Duration::from_secs(10),
        )
        .await
        .expect_err("exit 3");
        let text = err.to_string();
        assert!(text.contains("no present for _acme-challenge.a."), "{text}");
        assert_eq!(err.reason(), "dns_hook");
    }
}
