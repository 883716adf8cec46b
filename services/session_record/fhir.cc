#include "services/session_record/fhir.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/time/proto_time.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace continuum::records {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;
namespace v1 = ::continuum::records::v1;

// A tiny builder over google.protobuf.Struct, so the JSON comes out of protobuf's encoder.
class Obj {
 public:
  Obj& Set(const std::string& k, const std::string& v) {
    (*s_.mutable_fields())[k].set_string_value(v);
    return *this;
  }
  Obj& Set(const std::string& k, double v) {
    (*s_.mutable_fields())[k].set_number_value(v);
    return *this;
  }
  Obj& Set(const std::string& k, const Obj& v) {
    *(*s_.mutable_fields())[k].mutable_struct_value() = v.s_;
    return *this;
  }
  Obj& Add(const std::string& k, const Obj& v) {
    *(*s_.mutable_fields())[k].mutable_list_value()->add_values()->mutable_struct_value() = v.s_;
    return *this;
  }
  const Struct& get() const { return s_; }

 private:
  Struct s_;
};

std::string Instant(const google::protobuf::Timestamp& t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", FromProto(t), absl::UTCTimeZone());
}
std::string IdOf(const std::string& name) { return name.substr(name.rfind('/') + 1); }
Obj Ref(const std::string& type, const std::string& id) { return Obj().Set("reference", type + "/" + id); }
Obj Coding(const std::string& system, const std::string& code, const std::string& display) {
  return Obj().Add("coding", Obj().Set("system", system).Set("code", code).Set("display", display)).Set("text", display);
}
Obj Quantity(double value, const std::string& unit) {
  return Obj().Set("value", value).Set("unit", unit).Set("system", "http://unitsofmeasure.org").Set("code", unit);
}

std::string RouteText(continuum::common::v1::DoseRoute r) {
  switch (r) {
    case continuum::common::v1::DOSE_ROUTE_SUBLINGUAL: return "Sublingual";
    case continuum::common::v1::DOSE_ROUTE_INTRANASAL: return "Intranasal";
    case continuum::common::v1::DOSE_ROUTE_INTRAMUSCULAR: return "Intramuscular";
    case continuum::common::v1::DOSE_ROUTE_INTRAVENOUS: return "Intravenous";
    default: return "Unknown";
  }
}

}  // namespace

absl::StatusOr<std::string> FhirBundleJson(const std::string& client_id, const std::vector<v1::SessionRecord>& records,
                                           const std::map<std::string, std::vector<v1::SessionRecordVersion>>& versions,
                                           absl::Time now) {
  Obj bundle;
  bundle.Set("resourceType", "Bundle").Set("type", "collection").Set("timestamp", Instant(ToProto(now)));
  auto add = [&](const std::string& type, const std::string& id, Obj resource) {
    resource.Set("resourceType", type).Set("id", id);
    bundle.Add("entry", Obj().Set("fullUrl", "urn:continuum:" + type + "/" + id).Set("resource", resource));
  };
  const Obj patient = Ref("Patient", client_id);
  for (const auto& r : records) {
    const std::string enc_id = IdOf(r.name());
    Obj period;
    if (r.has_start_time()) period.Set("start", Instant(r.start_time()));
    if (r.has_complete_time()) period.Set("end", Instant(r.complete_time()));
    std::string act = r.setting() == continuum::common::v1::CARE_SETTING_HOME      ? "HH"
                      : r.setting() == continuum::common::v1::CARE_SETTING_VIRTUAL ? "VR"
                                                                                   : "AMB";
    add("Encounter", enc_id,
        Obj().Set("status", "finished")
            .Set("class", Obj().Set("system", "http://terminology.hl7.org/CodeSystem/v3-ActCode").Set("code", act))
            .Add("type", Obj().Set("text", continuum::common::v1::AppointmentKind_Name(r.kind())))
            .Set("subject", patient)
            .Set("period", period)
            .Add("participant", Obj().Set("individual", Ref("Practitioner", IdOf(r.provider()))))
            .Add("identifier", Obj().Set("system", "urn:continuum:appointment").Set("value", r.appointment())));
    const Obj encounter = Ref("Encounter", enc_id);
    for (const auto& d : r.dose_administrations()) {
      Obj dosage;
      dosage.Set("route", Obj().Set("text", RouteText(d.route())))
          .Set("dose", Quantity(d.administered_dose_mg() > 0 ? d.administered_dose_mg() : d.dose_mg(), "mg"));
      if (d.segments_size() > 0) {
        dosage.Set("rateQuantity", Quantity(d.segments(d.segments_size() - 1).rate_mg_per_hour(), "mg/h"));
      }
      Obj effective;
      effective.Set("start", Instant(d.start_time()));
      if (d.has_stop_time()) effective.Set("end", Instant(d.stop_time()));
      Obj admin;
      admin.Set("status", d.has_stop_time() ? "completed" : "in-progress")
          .Set("medicationCodeableConcept", Coding("http://www.nlm.nih.gov/research/umls/rxnorm", "6130", "Ketamine"))
          .Set("subject", patient)
          .Set("context", encounter)
          .Set("effectivePeriod", effective)
          .Add("performer", Obj().Set("actor", Ref("Practitioner", IdOf(d.administered_by()))))
          .Set("dosage", dosage);
      if (d.has_override()) admin.Add("note", Obj().Set("text", "Outside dose plan, overridden: " + d.override().reason()));
      add("MedicationAdministration", d.administration_id(), admin);
    }
    int n = 0;
    for (const auto& v : r.vitals()) {
      struct Reading {
        int value;
        const char* loinc;
        const char* display;
        const char* unit;
      };
      const Reading readings[] = {{v.systolic_mmhg(), "8480-6", "Systolic blood pressure", "mm[Hg]"},
                                  {v.diastolic_mmhg(), "8462-4", "Diastolic blood pressure", "mm[Hg]"},
                                  {v.heart_rate_bpm(), "8867-4", "Heart rate", "/min"},
                                  {v.spo2_percent(), "59408-5", "Oxygen saturation by pulse oximetry", "%"}};
      for (const auto& reading : readings) {
        if (reading.value == 0) continue;
        add("Observation", absl::StrCat(enc_id, "-vs", ++n),
            Obj().Set("status", "final")
                .Add("category", Coding("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs",
                                        "Vital Signs"))
                .Set("code", Coding("http://loinc.org", reading.loinc, reading.display))
                .Set("subject", patient)
                .Set("encounter", encounter)
                .Set("effectiveDateTime", Instant(v.measure_time()))
                .Set("valueQuantity", Quantity(reading.value, reading.unit)));
      }
    }
    // FHIR R4 AdverseEvent; CTCAE grades 1-3 map to the R4 severity codes, and a
    // life-threatening event is "severe" and "Serious" (R4 has no fourth severity code).
    for (const auto& ae : r.adverse_events()) {
      using Sev = v1::AdverseEvent;
      const char* severity = ae.severity() == Sev::SEVERITY_MILD       ? "mild"
                             : ae.severity() == Sev::SEVERITY_MODERATE ? "moderate"
                                                                       : "severe";
      bool serious = ae.severity() == Sev::SEVERITY_SEVERE || ae.severity() == Sev::SEVERITY_LIFE_THREATENING;
      Obj event;
      event.Set("actuality", "actual")
          .Set("event", Obj().Set("text", ae.description()))
          .Set("subject", patient)
          .Set("encounter", encounter)
          .Set("date", Instant(ae.occur_time()))
          .Set("recordedDate", Instant(ae.create_time()))
          .Set("recorder", Ref("Practitioner", IdOf(ae.reporter())))
          .Set("severity", Coding("http://terminology.hl7.org/CodeSystem/adverse-event-severity", severity, severity))
          .Set("seriousness", Coding("http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
                                     serious ? "Serious" : "Non-serious", serious ? "Serious" : "Non-serious"));
      add("AdverseEvent", absl::StrCat(enc_id, "-ae", ae.adverse_event_id()), event);
    }
    if (!r.note().text().empty()) {
      std::string encoded;
      absl::Base64Escape(r.note().text(), &encoded);
      add("DocumentReference", enc_id + "-note",
          Obj().Set("status", "current")
              .Set("type", Obj().Set("text", r.note().kind() == v1::Note::KIND_INTEGRATION ? "Integration note"
                                                                                           : "Session note"))
              .Set("subject", patient)
              .Set("date", Instant(r.note().update_time()))
              .Add("author", Ref("Practitioner", IdOf(r.note().author())))
              .Set("context", Obj().Add("encounter", encounter))
              .Add("content", Obj().Set("attachment", Obj().Set("contentType", "text/plain; charset=utf-8")
                                                          .Set("data", encoded))));
    }
    auto it = versions.find(r.name());
    if (it != versions.end()) {
      for (const auto& v : it->second) {
        Obj prov;
        prov.Add("target", encounter)
            .Set("recorded", Instant(v.create_time()))
            .Set("activity", Obj().Set("text", v.action()))
            .Add("agent", Obj().Set("who", Obj().Set("display", v.author())));
        if (!v.reason().empty()) prov.Add("reason", Obj().Set("text", v.reason()));
        add("Provenance", absl::StrCat(enc_id, "-v", v.version()), prov);
      }
    }
  }
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  auto status = google::protobuf::util::MessageToJsonString(bundle.get(), &json, options);
  if (!status.ok()) return absl::InternalError("FHIR bundle: " + status.ToString());
  return json;
}

}  // namespace continuum::records
