//! Who may talk to whom: the one place that decides it.

use storage::UserRecord;

use crate::EngineError;

/// May `from` open a 1:1 chat with `to`? Until friendships exist, any two
/// distinct registered users may.
pub fn may_open_direct(from: &UserRecord, to: &UserRecord) -> Result<(), EngineError> {
    if from.id == to.id {
        return Err(EngineError::InvalidField("cannot open a chat with yourself".into()));
    }
    Ok(())
}
