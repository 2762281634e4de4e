import argparse
import logging

from example_app import create_app, socketio

parser = argparse.ArgumentParser(description="Run the flask-tickstock-monitor demo app.")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=5000)
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
socketio.run(create_app(), host=args.host, port=args.port, allow_unsafe_werkzeug=True)
