//! The operator's commands: `migrate` and `user create`, run as a newcomer would.
use std::process::Command;

fn workbench(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_workbench"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("WORKBENCH__DATABASE__URL")
        .output()
        .expect("run workbench")
}

#[test]
fn migrate_and_create_the_first_admin() {
    let dir = tempfile::tempdir().unwrap();
    let status = workbench(dir.path(), &["migrate", "status"]);
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains("Pending"), "{status:?}");

    let up = workbench(dir.path(), &["migrate", "up"]);
    assert!(up.status.success(), "{up:?}");
    let status = String::from_utf8(workbench(dir.path(), &["migrate", "status"]).stdout).unwrap();
    assert!(status.lines().all(|l| l.starts_with("Applied")), "{status}");

    let created = workbench(dir.path(), &["user", "create", "--email", "Root@Example.com", "--password", "root-password-1", "--admin"]);
    assert!(created.status.success(), "{created:?}");
    assert!(String::from_utf8_lossy(&created.stdout).contains("created admin user root@example.com"));

    let again = workbench(dir.path(), &["user", "create", "--email", "root@example.com", "--password", "root-password-1"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"), "{again:?}");

    let weak = workbench(dir.path(), &["user", "create", "--email", "x@example.com", "--password", "short"]);
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("password: must be at least 8 characters"), "{weak:?}");

    let down = workbench(dir.path(), &["migrate", "down"]);
    assert!(down.status.success(), "{down:?}");
    let status = String::from_utf8(workbench(dir.path(), &["migrate", "status"]).stdout).unwrap();
    assert!(status.contains("Pending"), "{status}");
}
