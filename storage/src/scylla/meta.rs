//! The ID clock's high-water marks in Scylla, raised by compare-and-set.

use async_trait::async_trait;

use super::statements::*;
use super::{CAS_ATTEMPTS, ScyllaStore, backend};
use crate::*;

/// Milliseconds as stored (bigint); a mark beyond `i64::MAX` cannot be stored.
fn stored_ms(ms: u64) -> StorageResult<i64> {
    i64::try_from(ms).map_err(|_| StorageError::Invalid(format!("clock high-water mark {ms} out of range")))
}

impl ScyllaStore {
    async fn high_water(&self, generator: u16) -> StorageResult<Option<i64>> {
        Ok(self.row::<1, (i64,)>(CLOCK_SELECT, (i64::from(generator),)).await?.map(|(ms,)| ms))
    }
}

#[async_trait]
impl MetaStore for ScyllaStore {
    async fn clock_high_water(&self, generator: u16) -> StorageResult<Option<u64>> {
        Ok(self.high_water(generator).await?.map(|ms| u64::try_from(ms).unwrap_or(0)))
    }

    async fn set_clock_high_water(&self, generator: u16, ms: u64) -> StorageResult<()> {
        let (generator_key, ms) = (i64::from(generator), stored_ms(ms)?);
        for _ in 0..CAS_ATTEMPTS {
            let raised = match self.high_water(generator).await? {
                Some(current) if current >= ms => return Ok(()),
                Some(current) => self.lwt(CLOCK_RAISE, (ms, generator_key, current)).await?,
                None => self.lwt(CLOCK_INSERT, (generator_key, ms)).await?,
            };
            if raised.applied {
                return Ok(());
            }
        }
        Err(backend(format!("clock of generator {generator}: too much contention")))
    }

    async fn ping(&self) -> StorageResult<()> {
        self.high_water(0).await.map(drop)
    }
}
