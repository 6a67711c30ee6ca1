//! A fresh MariaDB database per test (the cluster and store tests' kind; the notification
//! tests' kind, with the fence raised, is `crate::notify::TestDb`).

use gobearmon::config::Secret;
use gobearmon::store::Store;
use mysql_async::prelude::Queryable;

/// The server the tests use: `GBM_TEST_MYSQL` (a URL without a database, as the README's
/// test command exports it), or root on 127.0.0.1.
pub fn server_url() -> String {
    std::env::var("GBM_TEST_MYSQL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/".into())
}

/// A database of its own for one test, dropped again by [`TestDb::drop_db`].
pub struct TestDb {
    pub name: String,
    pub url: String,
}

async fn admin_conn() -> mysql_async::Conn {
    let url = server_url();
    match mysql_async::Conn::from_url(&url).await {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot reach the test MariaDB at {url} ({e}); run the README's test command \
             (scripts/test.sh), which starts MariaDB and creates the test user"
        ),
    }
}

impl TestDb {
    /// Creates an empty database `gbm_t_<tag>_<pid>`, first dropping leftovers of earlier runs
    /// of the same test whose process is gone (a panicking test cannot drop its database).
    pub async fn empty(tag: &str) -> TestDb {
        let name = format!("gbm_t_{tag}_{}", std::process::id());
        let mut conn = admin_conn().await;
        let like = format!("gbm\\_t\\_{}\\_%", tag.replace('_', "\\_"));
        let existing: Vec<String> = conn
            .exec(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?",
                (like,),
            )
            .await
            .expect("list test databases");
        for old in existing {
            let pid = old.rsplit('_').next().unwrap_or_default();
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                conn.query_drop(format!("DROP DATABASE IF EXISTS `{old}`"))
                    .await
                    .expect("drop a leftover test database");
            }
        }
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
            .await
            .expect("drop old test database");
        conn.query_drop(format!("CREATE DATABASE `{name}`"))
            .await
            .expect("create test database");
        drop(conn);
        let url = format!(
            "{}{name}",
            server_url().trim_end_matches('/').to_string() + "/"
        );
        TestDb { name, url }
    }

    /// Creates a database and applies install.sql.
    pub async fn installed(tag: &str) -> (TestDb, Store) {
        let db = TestDb::empty(tag).await;
        let store = db.store();
        gobearmon::store::schema::install(&store)
            .await
            .expect("install.sql applies");
        (db, store)
    }

    pub fn store(&self) -> Store {
        Store::new(&[Secret::new(self.url.clone())]).expect("store")
    }

    pub async fn conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::from_url(&self.url)
            .await
            .expect("connect to test database")
    }

    /// Runs SQL (several statements allowed).
    pub async fn exec(&self, sql: &str) {
        let mut c = self.conn().await;
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The first value of the first row `sql` answers.
    pub async fn one<T: mysql_async::prelude::FromValue + Send + 'static>(&self, sql: &str) -> T {
        let mut c = self.conn().await;
        c.query_first(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql}: no row"))
    }

    /// The epoch stored in the fence row.
    pub async fn fence_epoch(&self) -> u64 {
        self.conn()
            .await
            .query_first("SELECT epoch FROM epoch_fence WHERE id = 1")
            .await
            .expect("read the fence")
            .expect("the fence row exists")
    }

    pub async fn drop_db(self) {
        let mut conn = admin_conn().await;
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .await
            .expect("drop test database");
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `secs` seconds.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {secs} s waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until the fence holds at least `epoch`, and returns what it holds.
pub fn wait_fence(rt: &tokio::runtime::Runtime, db: &TestDb, epoch: u64) -> u64 {
    crate::cluster::wait_until(
        std::time::Duration::from_secs(10),
        &format!("the fence to reach epoch {epoch}"),
        || {
            let f = rt.block_on(db.fence_epoch());
            (f >= epoch).then_some(f)
        },
    )
}
