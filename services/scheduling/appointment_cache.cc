#include "services/scheduling/appointment_cache.h"

#include "absl/strings/str_cat.h"
#include "common/api/api.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/registry.h"

namespace continuum::scheduling {

AppointmentCache::AppointmentCache(Clock& clock, Options options) : clock_(clock), options_(options) {
  if (options_.metrics != nullptr) {
    auto& lookups = prometheus::BuildCounter()
                        .Name("continuum_appointment_cache_lookups_total")
                        .Help("GetAppointment lookups in the appointment cache, by result (hit or miss).")
                        .Register(*options_.metrics);
    hits_ = &lookups.Add({{"result", "hit"}});
    misses_ = &lookups.Add({{"result", "miss"}});
    invalidations_ = &prometheus::BuildCounter()
                          .Name("continuum_appointment_cache_invalidations_total")
                          .Help("Appointments dropped from the cache because they changed.")
                          .Register(*options_.metrics)
                          .Add({});
    serving_gauge_ = &prometheus::BuildGauge()
                          .Name("continuum_appointment_cache_serving")
                          .Help("1 while the appointment cache serves; 0 while it is off or suspended (no "
                                "confirmed subscription to appointment changes, e.g. Redis down).")
                          .Register(*options_.metrics)
                          .Add({});
  }
}

std::string AppointmentCache::Key(absl::string_view clinic_id, absl::string_view appointment_id) {
  return absl::StrCat(clinic_id, "/", appointment_id);  // ids never contain '/'
}

void AppointmentCache::Count(prometheus::Counter* counter) {
  if (counter != nullptr) counter->Increment();
}

std::shared_ptr<const v1::Appointment> AppointmentCache::Get(absl::string_view clinic_id,
                                                            absl::string_view appointment_id) {
  if (!enabled() || !serving_.load(std::memory_order_acquire)) return nullptr;
  std::string key = Key(clinic_id, appointment_id);
  absl::Time now = clock_.Now();
  std::shared_ptr<const v1::Appointment> value;
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      if (now < it->second.expires_at) {
        value = it->second.value;
      } else {
        entries_.erase(it);
      }
    }
  }
  Count(value ? hits_ : misses_);
  return value;
}

AppointmentCache::Ticket AppointmentCache::BeginRead() {
  absl::MutexLock lock(&mu_);
  return Ticket{generation_, clock_.Now()};
}

void AppointmentCache::Fill(const Ticket& ticket, absl::string_view clinic_id, absl::string_view appointment_id,
                            const v1::Appointment& value) {
  if (!enabled() || !serving_.load(std::memory_order_acquire)) return;
  auto shared = std::make_shared<const v1::Appointment>(value);
  std::string key = Key(clinic_id, appointment_id);
  absl::MutexLock lock(&mu_);
  if (ticket.generation != generation_) return;  // something changed while it was read
  if (entries_.size() >= options_.max_entries && !entries_.contains(key)) entries_.erase(entries_.begin());
  // The lifetime counts from the read's start, not from now: the value was true then.
  entries_.insert_or_assign(std::move(key), Entry{std::move(shared), ticket.read_at + options_.ttl});
}

void AppointmentCache::Invalidate(absl::string_view clinic_id, absl::string_view appointment_id) {
  std::string key = Key(clinic_id, appointment_id);
  {
    absl::MutexLock lock(&mu_);
    ++generation_;
    entries_.erase(key);
  }
  Count(invalidations_);
}

void AppointmentCache::InvalidateFromNotice(absl::string_view payload) {
  size_t space = payload.find(' ');
  auto ids = api::ParseName(space == absl::string_view::npos ? payload : payload.substr(space + 1),
                            "clinics/*/appointments/*", "notice");
  if (!ids.ok()) {
    absl::MutexLock lock(&mu_);
    ++generation_;
    entries_.clear();
    return;
  }
  Invalidate((*ids)[0], (*ids)[1]);
}

void AppointmentCache::Suspend() {
  serving_.store(false, std::memory_order_release);
  if (serving_gauge_ != nullptr) serving_gauge_->Set(0);
  absl::MutexLock lock(&mu_);
  ++generation_;
  entries_.clear();
}

void AppointmentCache::Resume() {
  {
    absl::MutexLock lock(&mu_);
    ++generation_;  // reads begun while suspended may have missed a notice
    entries_.clear();
  }
  serving_.store(true, std::memory_order_release);
  if (serving_gauge_ != nullptr && enabled()) serving_gauge_->Set(1);
}

}  // namespace continuum::scheduling
