#pragma once
// A JSON value as a PropertyValue (SPEC §2): the one conversion the definition parser (a
// criterion's value), the HTTP request parser (contact properties) and the cluster's record
// decoder share. The caller parsed the JSON with simdjson's DOM; this header keeps simdjson
// out of the base layer's interface.
#include "bucketd/types.h"

namespace simdjson::dom {
class element;
}  // namespace simdjson::dom

namespace bucketd {

// Numbers become doubles (integers beyond 2^53 round); arrays and objects keep their
// minified text; strings, booleans and null their value.
PropertyValue ToPropertyValue(const simdjson::dom::element& value);

}  // namespace bucketd
