#include "common/time/clock.h"

namespace continuum {

Clock& RealClock::Get() {
  static RealClock* const clock = new RealClock();
  return *clock;
}

}  // namespace continuum
