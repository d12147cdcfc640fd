//! A [`MessageId`] as a PostgreSQL `uuid`, both ways (16 bytes, big
//! endian: the id's text form is the same UUID).

use std::error::Error;

use bytes::BytesMut;
use postgres::types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};

use crate::MessageId;

#[derive(Debug, Clone, Copy)]
pub(super) struct PgId(pub(super) MessageId);

impl ToSql for PgId {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(&self.0.as_u128().to_be_bytes());
        Ok(IsNull::No)
    }

    accepts!(UUID);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgId {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let bytes: [u8; 16] = raw.try_into().map_err(|_| "a uuid is 16 bytes")?;
        Ok(Self(MessageId::from_u128(u128::from_be_bytes(bytes))))
    }

    accepts!(UUID);
}
