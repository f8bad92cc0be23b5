"""Exit 0 once a Kafka broker answers metadata requests. Usage: kafka_ready.py HOST:PORT"""

import asyncio
import sys

from aiokafka.admin import AIOKafkaAdminClient


async def main() -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=3000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


asyncio.run(main())
