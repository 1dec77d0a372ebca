//! The runtime runs a well-behaved provider: every export of the dummy through `Provider`.

use bnr_runtime::{CallError, Catalog, types};

use crate::support::{self, DUMMY, backup_ref, instance, zone};

#[tokio::test]
async fn the_dummy_describes_itself_at_load() {
    let dummy = support::provider(DUMMY);
    assert_eq!(dummy.name(), "dummy");
    assert_eq!(dummy.version(), "1.0.0");
    assert_eq!(dummy.wit_version(), "1.3.0");
    assert_eq!(dummy.sha256().len(), 64);
    let info = dummy.info();
    assert!(info.settings.is_empty());
    assert!(info.needs.is_empty());
    assert!(info.capabilities.single_volume_restore);
    assert_eq!(
        info.capabilities.delete_granularity,
        types::DeleteGranularity::RestorePoint
    );
}

#[tokio::test]
async fn the_dummy_answers_every_export_correctly() {
    let dummy = support::provider(DUMMY);
    let ctx = support::ctx(&dummy, &[]);
    let vm = instance("vm-1");

    let policies = dummy.list_policies(&ctx, &zone()).await.unwrap();
    let ids: Vec<_> = policies.iter().map(|p| p.external_id.as_str()).collect();
    assert_eq!(ids, ["gold-policy", "silver-policy"]);
    assert_eq!(policies[0].name, "Golden Policy");

    assert!(
        dummy
            .validate_policy(&ctx, &zone(), "gold-policy")
            .await
            .unwrap()
    );
    assert!(
        !dummy
            .validate_policy(&ctx, &zone(), "made-up")
            .await
            .unwrap()
    );

    assert_eq!(
        dummy
            .assign_instance(&ctx, &vm, "gold-policy")
            .await
            .unwrap(),
        Some("dummy-external-backup-id".to_owned())
    );
    dummy
        .remove_instance(&ctx, &vm, "gold-policy")
        .await
        .unwrap();

    let started = dummy
        .start_backup(
            &ctx,
            &vm,
            "gold-policy",
            types::BackupOptions { quiesce: false },
        )
        .await
        .unwrap();
    let types::Started::Done(types::OperationResult::BackupTaken(taken)) = started else {
        panic!("expected a finished backup, got {started:?}");
    };
    assert!(
        taken.external_id.starts_with("dummy-vm-1-"),
        "{}",
        taken.external_id
    );
    assert_eq!(taken.kind, "FULL");
    assert_eq!(taken.size, (8 << 30) + (2 << 30));
    assert_eq!(taken.protected_size, taken.size);

    let backup = backup_ref(&vm);
    assert_eq!(
        dummy.start_delete(&ctx, &backup, false).await.unwrap(),
        types::Started::Done(types::OperationResult::Deleted)
    );
    assert_eq!(
        dummy
            .start_restore(&ctx, &backup, &types::RestoreTarget::InPlace(vm.clone()))
            .await
            .unwrap(),
        types::Started::Done(types::OperationResult::Restored)
    );
    let request = types::VolumeRestoreRequest {
        backup: backup.clone(),
        volume: vm.volumes[1].clone(),
        attach_to: vm.clone(),
        new_volume_name: "restored".into(),
    };
    let started = dummy.start_restore_volume(&ctx, &request).await.unwrap();
    let types::Started::Done(types::OperationResult::VolumeRestored(restored)) = started else {
        panic!("expected a restored volume, got {started:?}");
    };
    assert_eq!(restored.size, 2 << 30);
    assert!(!restored.path.is_empty());

    let err = dummy.poll_operation(&ctx, "nope").await.unwrap_err();
    assert!(
        matches!(err, CallError::Provider(types::ProviderError::NotFound(_))),
        "{err:?}"
    );
    let err = dummy.cancel_operation(&ctx, "nope").await.unwrap_err();
    assert!(
        matches!(err, CallError::Provider(types::ProviderError::NotFound(_))),
        "{err:?}"
    );
    let err = dummy.list_restore_points(&ctx, &vm).await.unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Provider(types::ProviderError::Unsupported(_))
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    let vm2 = instance("vm-2");
    let metrics = dummy
        .metrics(&ctx, &zone(), &[vm.clone(), vm2])
        .await
        .unwrap();
    assert_eq!(metrics.len(), 2);
    assert_eq!(metrics[0].instance_uuid, "vm-1");
    assert_eq!(metrics[1].instance_uuid, "vm-2");
    assert_eq!(metrics[0].size, (8 << 30) + (2 << 30));

    assert_eq!(
        dummy.storage_stats(&ctx, &zone()).await.unwrap(),
        types::StorageStats {
            used_bytes: 0,
            total_bytes: 0
        }
    );
}

#[tokio::test]
async fn a_session_reuses_one_instance_across_calls() {
    let dummy = support::provider(DUMMY);
    let ctx = support::ctx(&dummy, &[]);
    let mut session = dummy.session(&ctx).await.unwrap();
    for _ in 0..20 {
        let policies = session.list_policies(&zone()).await.unwrap();
        assert_eq!(policies.len(), 2);
    }
    // A provider error is an answer, not a failure: the session keeps going.
    assert!(session.poll_operation("nope").await.is_err());
    assert!(
        session
            .validate_policy(&zone(), "gold-policy")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn provider_errors_reach_the_caller_typed_and_retryable_when_unavailable() {
    let scripted = support::provider(support::SCRIPTED);
    let ctx = support::ctx(&scripted, &[("backup.plugin.scripted.mode", "outage")]);
    let err = scripted.list_policies(&ctx, &zone()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            CallError::Provider(types::ProviderError::Unavailable(_))
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains("unavailable"), "{err}");
}

#[tokio::test]
async fn declared_settings_reach_the_provider() {
    let scripted = support::provider(support::SCRIPTED);
    let ctx = support::ctx(&scripted, &[("backup.plugin.scripted.mode", "fail")]);
    let err = scripted
        .start_backup(
            &ctx,
            &instance("vm-1"),
            "gold-policy",
            types::BackupOptions { quiesce: false },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Provider(types::ProviderError::Rejected(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_provider_directory_loads_what_it_can_and_reports_the_rest() {
    let dir = support::TempDir::new("providers");
    for stem in [support::DUMMY, support::SCRIPTED, support::WRONG_WORLD] {
        std::fs::copy(
            support::component_path(stem),
            dir.path().join(format!("{stem}.wasm")),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("broken.wasm"), b"not wasm").unwrap();
    std::fs::write(dir.path().join("README.txt"), b"ignored").unwrap();

    let catalog = Catalog::new();
    let rt = support::runtime();
    let loaded = catalog.load_dir(&rt, dir.path());

    let outcome: Vec<(String, Result<String, String>)> = loaded
        .iter()
        .map(|(path, result)| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let result = match result {
                Ok(provider) => Ok(provider.name().to_owned()),
                Err(err) => Err(err.to_string()),
            };
            (file, result)
        })
        .collect();
    assert_eq!(outcome.len(), 4, "{outcome:?}");
    assert_eq!(outcome[0].0, "bnr_dummy.wasm");
    assert_eq!(outcome[0].1, Ok("dummy".to_owned()));
    assert_eq!(outcome[1].0, "bnr_fixture_scripted.wasm");
    assert_eq!(outcome[1].1, Ok("scripted".to_owned()));
    assert!(
        matches!(&outcome[2].1, Err(e) if e.contains("wrong world")),
        "{outcome:?}"
    );
    assert_eq!(outcome[3].0, "broken.wasm");
    assert!(matches!(&outcome[3].1, Err(e) if e.contains("not a WebAssembly file")));

    let names: Vec<_> = catalog.list().iter().map(|p| p.name().to_owned()).collect();
    assert_eq!(names, ["dummy", "scripted"]);
    let dummy = catalog.get("dummy").unwrap();
    assert_eq!(
        dummy
            .list_policies(&support::ctx(&dummy, &[]), &zone())
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(catalog.get("veeam").is_none());

    let missing = catalog.load_dir(&rt, &support::target_dir().join("no-such-dir"));
    assert_eq!(missing.len(), 1);
    assert!(matches!(missing[0].1, Err(bnr_runtime::LoadError::Io(_))));
}
