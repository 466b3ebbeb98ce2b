//! Incremental backups of database components (issue "Infrastructure components", bench item, as
//! a test on a small table): after 1 % of the rows change, scattered over the whole table, the
//! second backup of a `postgres` and of a `mariadb` component stores less than a tenth of the first
//! one's bytes (delta chunks, ADR 0007), and the second backup restores the changed rows.

mod support;

use ibs_controller::model::{Job, JobStatus};
use ibs_controller::testing::TestController;
use support::*;

const ROWS: u32 = 150_000;

/// Backs up twice around `change`, asserting the second backup's share of the first one's bytes.
async fn two_backups(t: &TestController, change: impl FnOnce()) -> (Job, Job) {
    let first = backup(t).await;
    assert_eq!(first.status, JobStatus::Succeeded, "{first:?}");
    change();
    let second = backup(t).await;
    assert_eq!(second.status, JobStatus::Succeeded, "{second:?}");
    assert!(
        second.bytes_stored * 10 < first.bytes_stored,
        "after 1 % of the rows changed the second backup stored {} bytes, the first {}",
        second.bytes_stored,
        first.bytes_stored
    );
    (first, second)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_second_backup_after_scattered_updates_stores_under_a_tenth() {
    ensure_services();
    let db = unique("ibs_d");
    let restored = format!("{db}_r");
    let _c = PgDrop(vec![db.clone(), restored.clone()]);
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(
        &db,
        &format!(
            "CREATE TABLE acc (id INT PRIMARY KEY, bal INT NOT NULL, note TEXT NOT NULL); \
        INSERT INTO acc SELECT g, 0, md5(g::text) FROM generate_series(1, {ROWS}) g;"
        ),
    );
    let t = setup(vec![component(serde_json::json!({
        "name": "pg", "kind": "postgres",
        "url": format!("postgresql://postgres@127.0.0.1:5432/{db}"),
    }))])
    .await;
    let (_, second) = two_backups(&t, || {
        psql(&db, "UPDATE acc SET bal = bal + 7 WHERE id % 100 = 0");
    })
    .await;
    let target = format!("postgresql://postgres@127.0.0.1:5432/{restored}");
    let r = restore(&t, &second.id, "pg", &target, false).await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    let q = "SELECT count(*), sum(bal), count(*) FILTER (WHERE bal = 7), md5(string_agg(note, ',' ORDER BY id)) FROM acc";
    assert_eq!(psql(&restored, q), psql(&db, q));
    assert!(psql(&restored, q).starts_with(&format!(
        "{ROWS}|{}|{}|",
        7 * (ROWS / 100),
        ROWS / 100
    )));
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_second_backup_after_scattered_updates_stores_under_a_tenth() {
    ensure_services();
    let db = unique("ibs_d");
    let restored = format!("{db}_r");
    let _c = MyDrop(vec![db.clone(), restored.clone()]);
    mysql(None, &format!("CREATE DATABASE {db}"));
    mysql(
        Some(&db),
        &format!(
            "CREATE TABLE acc (id INT PRIMARY KEY, bal INT NOT NULL, note VARCHAR(40) NOT NULL); \
        INSERT INTO acc SELECT seq, 0, md5(seq) FROM seq_1_to_{ROWS};"
        ),
    );
    let t = setup(vec![component(serde_json::json!({
        "name": "my", "kind": "mariadb",
        "url": format!("mysql://root@127.0.0.1:3306/{db}"),
    }))])
    .await;
    let (_, second) = two_backups(&t, || {
        mysql(Some(&db), "UPDATE acc SET bal = bal + 7 WHERE id % 100 = 0");
    })
    .await;
    let target = format!("mysql://root@127.0.0.1:3306/{restored}");
    let r = restore(&t, &second.id, "my", &target, false).await;
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    let q = "SELECT COUNT(*), SUM(bal), SUM(bal = 7), MD5(GROUP_CONCAT(note ORDER BY id SEPARATOR ',')) FROM acc";
    // GROUP_CONCAT is cut at group_concat_max_len: raise it for the session.
    let q = format!("SET SESSION group_concat_max_len = 100000000; {q}");
    assert_eq!(mysql(Some(&restored), &q), mysql(Some(&db), &q));
    assert!(mysql(Some(&restored), &q).starts_with(&format!(
        "{ROWS}\t{}\t{}\t",
        7 * (ROWS / 100),
        ROWS / 100
    )));
}
