from cgcnn.cli import run

run()
