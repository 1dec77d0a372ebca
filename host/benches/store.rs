//! Store per-statement costs: `cargo bench -p bnr --bench store` (PostgreSQL rows need
//! `BNR_TEST_POSTGRES_URL`, which `cargo xtask test` also uses; without it only SQLite runs).
//!
//! For each engine, one short read transaction with a point query (what `read_now` does on the
//! request path) and one write transaction with a one-row update, through the store, next to
//! the same statements issued directly with the engine's client (rusqlite on the calling
//! thread; tokio-postgres awaited inside a runtime): the ratio is the seam's overhead.
//! Prints a Markdown table (see docs/benchmarks.md).

use std::time::{Duration, Instant};

use bnr::store::postgres::testing::TestDatabase;
use bnr::store::{MIGRATIONS, Store, StoreError};

const ZONES: i64 = 1000;
const ITERATIONS: u32 = 3000;

fn per_op(iterations: u32, mut op: impl FnMut(i64)) -> Duration {
    for i in 0..200 {
        op(i % ZONES + 1);
    }
    let started = Instant::now();
    for i in 0..iterations {
        op(i64::from(i) % ZONES + 1);
    }
    started.elapsed() / iterations
}

fn fill(store: &Store) {
    store
        .write_blocking(|tx| -> Result<(), StoreError> {
            for i in 0..ZONES {
                tx.execute(
                    "INSERT INTO zones(uuid, name, created) VALUES (?1, ?2, 0)",
                    bnr::store::db::params![format!("u{i}"), format!("zone{i}")],
                )?;
            }
            Ok(())
        })
        .expect("fill");
}

fn store_read(store: &Store) -> Duration {
    per_op(ITERATIONS, |id| {
        let name: String = store
            .read_now(|c| -> Result<_, StoreError> {
                Ok(c.query_row("SELECT name FROM zones WHERE id = ?1", [id], |r| r.get(0))?)
            })
            .expect("read");
        assert!(!name.is_empty());
    })
}

fn store_write(store: &Store) -> Duration {
    per_op(ITERATIONS / 3, |id| {
        store
            .write_blocking(|tx| -> Result<_, StoreError> {
                tx.execute("UPDATE zones SET created = created + 1 WHERE id = ?1", [id])?;
                Ok(())
            })
            .expect("write");
    })
}

fn sqlite_direct(path: &std::path::Path) -> (Duration, Duration) {
    let c = rusqlite::Connection::open(path).expect("open");
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    let run = |sql: &str| c.prepare_cached(sql).unwrap().execute([]).unwrap();
    let read = per_op(ITERATIONS, |id| {
        run("BEGIN DEFERRED");
        let name: String = c
            .prepare_cached("SELECT name FROM zones WHERE id = ?1")
            .unwrap()
            .query_row([id], |r| r.get(0))
            .unwrap();
        run("COMMIT");
        assert!(!name.is_empty());
    });
    let write = per_op(ITERATIONS / 3, |id| {
        run("BEGIN IMMEDIATE");
        c.prepare_cached("UPDATE zones SET created = created + 1 WHERE id = ?1")
            .unwrap()
            .execute([id])
            .unwrap();
        run("COMMIT");
    });
    (read, write)
}

fn postgres_direct(url: &str) -> (Duration, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let select = client
            .prepare("SELECT name FROM zones WHERE id = $1")
            .await
            .unwrap();
        let update = client
            .prepare("UPDATE zones SET created = created + 1 WHERE id = $1")
            .await
            .unwrap();
        let timed = async |iterations: u32, write: bool| {
            let started = Instant::now();
            for i in 0..iterations {
                let id = i64::from(i) % ZONES + 1;
                if write {
                    client
                        .batch_execute(
                            "BEGIN ISOLATION LEVEL READ COMMITTED; \
                             LOCK TABLE schema_migrations IN SHARE ROW EXCLUSIVE MODE",
                        )
                        .await
                        .unwrap();
                    client.execute(&update, &[&id]).await.unwrap();
                } else {
                    client
                        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                        .await
                        .unwrap();
                    let row = client.query_one(&select, &[&id]).await.unwrap();
                    assert!(!row.get::<_, String>(0).is_empty());
                }
                client.batch_execute("COMMIT").await.unwrap();
            }
            started.elapsed() / iterations
        };
        timed(200, false).await;
        (
            timed(ITERATIONS, false).await,
            timed(ITERATIONS / 3, true).await,
        )
    })
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn row(engine: &str, what: &str, seam: Duration, direct: Duration) {
    println!(
        "| {engine} | {what} | {} | {} | {:.2} |",
        micros(seam),
        micros(direct),
        seam.as_secs_f64() / direct.as_secs_f64()
    );
}

fn main() {
    println!(
        "| engine | transaction | through the store (µs) | engine's client directly (µs) | ratio |"
    );
    println!("|---|---|---:|---:|---:|");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sqlite");
    let sqlite = Store::open(&path).expect("sqlite store");
    fill(&sqlite);
    let (read, write) = (store_read(&sqlite), store_write(&sqlite));
    let (direct_read, direct_write) = sqlite_direct(&path);
    row("SQLite", "read: point query", read, direct_read);
    row("SQLite", "write: one-row update", write, direct_write);

    let Ok(_) = std::env::var(bnr::store::postgres::testing::URL_VARIABLE) else {
        eprintln!("BNR_TEST_POSTGRES_URL not set: PostgreSQL not measured");
        return;
    };
    let database = TestDatabase::create();
    let postgres =
        Store::open_postgres(database.url(), dir.path(), MIGRATIONS).expect("postgres store");
    fill(&postgres);
    let (read, write) = (store_read(&postgres), store_write(&postgres));
    let (direct_read, direct_write) = postgres_direct(database.url());
    row("PostgreSQL", "read: point query", read, direct_read);
    row("PostgreSQL", "write: one-row update", write, direct_write);
    drop(postgres);
}
