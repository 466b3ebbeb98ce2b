//! Cancelling a backup (`BackupExtras::cancel`): a backup whose stream source blocks until the
//! token's hook ends it stops with `EngineError::Cancelled`, commits no manifest, releases its
//! lock (the next backup, with no lock wait, succeeds), and a backup whose token is never
//! cancelled is unaffected.

mod common;
use common::*;
use ibs_engine::{BackupExtras, BackupOptions, CancelToken, EngineError, SourceOrigin, SourceSpec};
use std::io::Read;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// Yields some bytes, then blocks until its sender is dropped (the cancel hook drops it) and fails,
/// as a killed export's pipe does.
struct Blocking {
    first: bool,
    wait: mpsc::Receiver<()>,
}

impl Read for Blocking {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.first {
            self.first = false;
            let n = buf.len().min(100_000);
            buf[..n].fill(7);
            return Ok(n);
        }
        let _ = self.wait.recv();
        Err(std::io::Error::other("export killed"))
    }
}

#[tokio::test]
async fn a_cancelled_backup_commits_nothing_and_releases_its_lock() {
    let env = env().await;
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    let token = CancelToken::new();
    let (tx, rx) = mpsc::channel::<()>();
    let tx = std::sync::Mutex::new(Some(tx));
    token.on_cancel(move || drop(tx.lock().unwrap().take()));
    let canceller = {
        let token = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            token.cancel();
        })
    };
    let opts = BackupOptions {
        sources: vec![
            SourceSpec {
                name: "tree".into(),
                origin: SourceOrigin::Path(src.clone()),
            },
            SourceSpec {
                name: "export".into(),
                origin: SourceOrigin::Stream {
                    reader: Box::new(Blocking {
                        first: true,
                        wait: rx,
                    }),
                    file_name: "export.out".into(),
                },
            },
        ],
        threads: 1,
        lock_wait: Duration::ZERO,
        progress: Arc::new(ibs_engine::Progress::default()),
    };
    let extras = BackupExtras {
        cancel: Some(token),
        ..Default::default()
    };
    let err = ibs_engine::backup_with(env.repo.clone(), &env.state, opts, extras)
        .await
        .unwrap_err();
    canceller.await.unwrap();
    assert!(matches!(err, EngineError::Cancelled), "{err}");
    assert!(env.repo.list_backup_ids().await.unwrap().is_empty());
    // The lock is gone: a backup that may not wait for one succeeds, with a live token.
    let extras = BackupExtras {
        cancel: Some(CancelToken::new()),
        ..Default::default()
    };
    let opts = BackupOptions {
        sources: vec![SourceSpec {
            name: "tree".into(),
            origin: SourceOrigin::Path(src),
        }],
        threads: 1,
        lock_wait: Duration::ZERO,
        progress: Arc::new(ibs_engine::Progress::default()),
    };
    let r = ibs_engine::backup_with(env.repo.clone(), &env.state, opts, extras)
        .await
        .unwrap();
    assert_eq!(
        env.repo.list_backup_ids().await.unwrap(),
        vec![r.catalog.backup_id]
    );
}
