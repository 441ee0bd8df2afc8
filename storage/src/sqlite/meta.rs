//! Node metadata (the ID clock's high-water mark) in SQLite.

use super::*;

#[async_trait]
impl MetaStore for SqliteStore {
    async fn clock_high_water(&self, generator: u16) -> StorageResult<Option<u64>> {
        self.read(move |tx| {
            Ok(tx
                .prepare_cached("SELECT high_water_ms FROM meta_clock WHERE generator = ?1")?
                .query_row([generator], |row| row.get(0))
                .optional()?)
        })
        .await
    }

    async fn set_clock_high_water(&self, generator: u16, ms: u64) -> StorageResult<()> {
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO meta_clock (generator, high_water_ms) VALUES (?1, ?2)
                 ON CONFLICT (generator) DO UPDATE SET high_water_ms = MAX(high_water_ms, excluded.high_water_ms)",
            )?
            .execute(params![generator, ms])?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> StorageResult<()> {
        self.read(|tx| {
            tx.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }
}
