#include "services/messaging/messaging_service.h"
