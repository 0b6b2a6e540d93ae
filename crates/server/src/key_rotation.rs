//! Re-encrypting every stored secret under a new key, for `workbench keys rotate`: provider API
//! keys (`model_providers.api_key_encrypted`, the provider id as associated data) and the SwanLab
//! key in the run-time settings. One transaction: either every secret moves or none does.
//!
//! A secret the new key already opens is left as it is, so a rotation interrupted after the
//! commit (before the new key file replaced the old one) can simply be run again.
use anyhow::Context;
use rand::RngCore;
use sea_orm::{ActiveModelTrait, DatabaseConnection, DbErr, EntityTrait, IntoActiveModel, Set, TransactionTrait};

use crate::{
    config::{self, Settings},
    crypto::Cipher,
    runtime_settings::{RUNTIME_KEY, RuntimeSettings, SWANLAB_KEY_AAD},
};
use store::entities::{app_settings, model_providers};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    /// Secrets re-encrypted under the new key.
    pub rotated: usize,
    /// Secrets the new key already opened.
    pub already_rotated: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("the stored secret of {0} opens with neither the old nor the new key; nothing was changed")]
    Undecryptable(String),
    #[error("stored run-time settings are corrupt: {0}")]
    CorruptSettings(#[from] serde_json::Error),
    #[error("database: {0}")]
    Db(#[from] DbErr),
}

/// Re-encrypts every secret sealed with `old` under `new`. The caller replaces the key file only
/// after this returns `Ok`.
pub async fn rotate_encryption_key(
    db: &DatabaseConnection,
    old: &Cipher,
    new: &Cipher,
) -> Result<RotationReport, RotationError> {
    let mut report = RotationReport::default();
    let txn = db.begin().await?;

    for provider in model_providers::Entity::find().all(&txn).await? {
        let Some(sealed) = provider.api_key_encrypted.clone() else { continue };
        let owner = format!("provider {:?}", provider.id);
        let Some(resealed) = reseal(&sealed, &provider.id, old, new, &owner, &mut report)? else { continue };
        let mut active = provider.into_active_model();
        active.api_key_encrypted = Set(Some(resealed));
        active.update(&txn).await?;
    }

    if let Some(row) = app_settings::Entity::find_by_id(RUNTIME_KEY.to_owned()).one(&txn).await? {
        let mut settings: RuntimeSettings = serde_json::from_str(&row.value)?;
        let sealed = settings.swanlab.api_key_encrypted.clone();
        if let Some(sealed) = sealed
            && let Some(resealed) = reseal(&sealed, SWANLAB_KEY_AAD, old, new, "the SwanLab key", &mut report)?
        {
            settings.swanlab.api_key_encrypted = Some(resealed);
            let mut active = row.into_active_model();
            active.value = Set(serde_json::to_string(&settings)?);
            active.update(&txn).await?;
        }
    }

    txn.commit().await?;
    Ok(report)
}

/// `Some(new ciphertext)`, or `None` when `new` already opens it.
fn reseal(
    sealed: &str,
    aad: &str,
    old: &Cipher,
    new: &Cipher,
    owner: &str,
    report: &mut RotationReport,
) -> Result<Option<String>, RotationError> {
    match old.decrypt(sealed, aad) {
        Ok(plain) => {
            report.rotated += 1;
            Ok(Some(new.encrypt(&plain, aad)))
        }
        Err(_) if new.decrypt(sealed, aad).is_ok() => {
            report.already_rotated += 1;
            Ok(None)
        }
        Err(_) => Err(RotationError::Undecryptable(owner.to_owned())),
    }
}

/// The whole `workbench keys rotate` command, for a stopped server: generates a new key into
/// `encryption.key.new` (0600) beside the current `encryption.key`, re-encrypts every secret, then
/// renames the new file over the old one. If a previous run was interrupted, its
/// `encryption.key.new` is reused, so running the command again finishes the job.
pub async fn rotate_key_file(settings: &Settings) -> anyhow::Result<RotationReport> {
    if settings.providers.encryption_key.is_some() {
        anyhow::bail!(
            "the encryption key comes from the configuration (providers.encryption_key); \
             rotating it means changing it there, which this command does not do"
        );
    }
    let current_path = settings.data_dir.join("encryption.key");
    let new_path = settings.data_dir.join("encryption.key.new");
    let read_key = |path: &std::path::Path| -> anyhow::Result<[u8; 32]> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        config::parse_key(&text).with_context(|| format!("parsing {}", path.display()))
    };
    let old = read_key(&current_path)?;
    let new = if new_path.exists() {
        read_key(&new_path)?
    } else {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        config::write_private(&new_path, hex::encode(bytes).as_bytes())
            .with_context(|| format!("writing {}", new_path.display()))?;
        bytes
    };
    let db = store::connect(&settings.database_url()).await.context("connecting to the database")?;
    let report = rotate_encryption_key(&db, &Cipher::new(&old), &Cipher::new(&new)).await?;
    db.close().await.ok();
    std::fs::rename(&new_path, &current_path)
        .with_context(|| format!("replacing {} with {}", current_path.display(), new_path.display()))?;
    Ok(report)
}
