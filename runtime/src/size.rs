//! Approximate in-memory size of values a provider returns, to enforce the result-size bound
//! on what leaves the sandbox (strings and lists count their contents).

use std::mem::size_of;

use super::types::*;

/// Bytes a lifted value occupies on the host, counting heap contents.
pub(crate) trait ResultSize {
    fn result_size(&self) -> usize;
}

macro_rules! inline_sized {
    ($($ty:ty),* $(,)?) => {$(
        impl ResultSize for $ty {
            fn result_size(&self) -> usize {
                size_of::<Self>()
            }
        }
    )*};
}

inline_sized!(
    (),
    bool,
    u8,
    u32,
    u64,
    i32,
    SettingKind,
    DeleteGranularity,
    VolumeKind,
    LogLevel,
    Capabilities,
    BackupOptions,
    StorageStats,
);

impl ResultSize for String {
    fn result_size(&self) -> usize {
        size_of::<Self>() + self.len()
    }
}

impl<T: ResultSize> ResultSize for Vec<T> {
    fn result_size(&self) -> usize {
        // Saturating: a sum can only overflow for values far beyond any bound we enforce.
        self.iter().fold(size_of::<Self>(), |sum, item| {
            sum.saturating_add(item.result_size())
        })
    }
}

impl<T: ResultSize> ResultSize for Option<T> {
    fn result_size(&self) -> usize {
        size_of::<Self>()
            + self
                .as_ref()
                .map_or(0, |v| v.result_size().saturating_sub(size_of::<T>()))
    }
}

impl<T: ResultSize, E: ResultSize> ResultSize for Result<T, E> {
    fn result_size(&self) -> usize {
        match self {
            Ok(v) => v.result_size(),
            Err(e) => e.result_size(),
        }
    }
}

/// Records: the struct itself plus the heap contents of the listed fields.
macro_rules! record_sized {
    ($($ty:ty { $($field:ident),* $(,)? })*) => {$(
        impl ResultSize for $ty {
            fn result_size(&self) -> usize {
                let mut size = size_of::<Self>();
                $( size = size.saturating_add(self.$field.result_size().saturating_sub(size_of_val(&self.$field))); )*
                size
            }
        }
    )*};
}

record_sized! {
    Policy { external_id, name, description }
    Metric { instance_uuid }
    RestorePoint { id, kind }
    BackupTaken { external_id, kind }
    VolumeRestored { path }
    Progress { message }
    SettingDecl { name, description, default_value }
    ProviderInfo { name, description, version, settings, needs, adopts_operations_from }
}

impl ResultSize for ProviderError {
    fn result_size(&self) -> usize {
        let message = match self {
            ProviderError::NotFound(m)
            | ProviderError::InvalidConfig(m)
            | ProviderError::Unauthorized(m)
            | ProviderError::Unavailable(m)
            | ProviderError::Rejected(m)
            | ProviderError::Unsupported(m)
            | ProviderError::Internal(m) => m,
        };
        size_of::<Self>() + message.len()
    }
}

impl ResultSize for Need {
    fn result_size(&self) -> usize {
        size_of::<Self>()
            + match self {
                Need::HttpToSetting(s) | Need::RemoteExecToSetting(s) => s.len(),
                Need::RemoteExecOnInstanceHost => 0,
                Need::HttpsToSetting(a) => {
                    a.url_setting.len()
                        + [
                            &a.pinned_cert_setting,
                            &a.ca_pem_setting,
                            &a.validate_setting,
                        ]
                        .into_iter()
                        .flatten()
                        .map(String::len)
                        .sum::<usize>()
                }
                Need::SshToSetting(a) => {
                    a.host_setting.len()
                        + a.username_setting.len()
                        + a.host_key_setting.len()
                        + [&a.port_setting, &a.password_setting, &a.private_key_setting]
                            .into_iter()
                            .flatten()
                            .map(String::len)
                            .sum::<usize>()
                }
            }
    }
}

impl ResultSize for OperationResult {
    fn result_size(&self) -> usize {
        size_of::<Self>()
            + match self {
                OperationResult::BackupTaken(b) => b.result_size() - size_of_val(b),
                OperationResult::VolumeRestored(v) => v.result_size() - size_of_val(v),
                OperationResult::Restored | OperationResult::Deleted => 0,
            }
    }
}

impl ResultSize for Started {
    fn result_size(&self) -> usize {
        size_of::<Self>()
            + match self {
                Started::Done(r) => r.result_size() - size_of_val(r),
                Started::Pending(handle) => handle.len(),
            }
    }
}

impl ResultSize for PollStatus {
    fn result_size(&self) -> usize {
        size_of::<Self>()
            + match self {
                PollStatus::Running(p) => p.result_size() - size_of_val(p),
                PollStatus::Finished(r) => r.result_size() - size_of_val(r),
                PollStatus::Failed(e) => e.result_size() - size_of_val(e),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_lists_count_their_contents() {
        let policy = Policy {
            external_id: "a".repeat(1000),
            name: "b".repeat(500),
            description: String::new(),
        };
        assert_eq!(policy.result_size(), size_of::<Policy>() + 1500);
        let list = vec![policy.clone(), policy];
        assert_eq!(
            list.result_size(),
            size_of::<Vec<Policy>>() + 2 * (size_of::<Policy>() + 1500)
        );
    }

    #[test]
    fn nested_variants_count_their_payloads() {
        let started = Started::Done(OperationResult::BackupTaken(BackupTaken {
            external_id: "x".repeat(100),
            kind: "FULL".into(),
            size: 1,
            protected_size: 2,
            created: None,
        }));
        assert_eq!(started.result_size(), size_of::<Started>() + 104);
        let err: Result<Started, ProviderError> = Err(ProviderError::Internal("y".repeat(10)));
        assert_eq!(err.result_size(), size_of::<ProviderError>() + 10);
    }
}
