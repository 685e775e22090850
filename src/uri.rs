//! Percent-encoding of one URL component, shared by every link the program
//! builds from data (the install links' activation code, the shop's top-up
//! link naming an eSIM).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters is encoded, so a value's
/// `:`, `$`, `&`, `/` or `#` cannot be read as URL syntax by any client,
/// wherever in the URL (path or query) the value is put.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` as one URL component: "LPA:1$a" -> "LPA%3A1%24a".
pub fn encode_component(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}
