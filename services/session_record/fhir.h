// FHIR R4 export of signed session records as a Bundle (type "collection") in JSON.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "continuum/records/v1/session_record.pb.h"

namespace continuum::records {

// Per record: an Encounter, a MedicationAdministration per dose, an Observation per vital
// sign value (LOINC 8480-6, 8462-4, 8867-4, 59408-5), a DocumentReference for the note, and a
// Provenance per version. `versions` is keyed by record name.
absl::StatusOr<std::string> FhirBundleJson(
    const std::string& client_id, const std::vector<continuum::records::v1::SessionRecord>& records,
    const std::map<std::string, std::vector<continuum::records::v1::SessionRecordVersion>>& versions, absl::Time now);

}  // namespace continuum::records
