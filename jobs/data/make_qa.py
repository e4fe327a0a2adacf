"""Write jobs/data/qa.parquet: 100 short factual questions with reference answers.

Columns: id (string), category (string), question (string), answer (string, the
reference), difficulty (int64, 1-3). Answers are short so that exact match after
normalisation (case, spaces, trailing punctuation) is a fair test.

    $ python jobs/data/make_qa.py
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).with_name("qa.parquet")

# (category, difficulty, question, answer)
QA: list[tuple[str, int, str, str]] = [
    ("geography", 1, "What is the capital of France?", "Paris"),
    ("geography", 1, "What is the capital of Japan?", "Tokyo"),
    ("geography", 1, "What is the capital of Italy?", "Rome"),
    ("geography", 2, "What is the capital of Australia?", "Canberra"),
    ("geography", 2, "What is the capital of Canada?", "Ottawa"),
    ("geography", 2, "What is the capital of Kenya?", "Nairobi"),
    ("geography", 3, "What is the capital of Mongolia?", "Ulaanbaatar"),
    ("geography", 1, "Which is the largest ocean on Earth?", "Pacific Ocean"),
    ("geography", 1, "On which continent is Egypt?", "Africa"),
    ("geography", 2, "What is the longest river in South America?", "Amazon"),
    ("geography", 2, "Which country has the most people living in it as of 2024?", "India"),
    ("geography", 2, "In which country is Mount Kilimanjaro?", "Tanzania"),
    ("geography", 3, "What is the smallest country in the world by area?", "Vatican City"),
    ("geography", 2, "Which desert covers most of northern Africa?", "Sahara"),
    ("geography", 3, "Which strait separates Europe and Africa at Spain?", "Strait of Gibraltar"),
    ("geography", 1, "What is the capital of Germany?", "Berlin"),
    ("geography", 2, "What is the capital of Brazil?", "Brasília"),
    ("geography", 3, "Which country has the city of Timbuktu?", "Mali"),
    ("geography", 2, "How many continents are there?", "7"),
    ("geography", 2, "What is the highest mountain in Europe west of the Caucasus?", "Mont Blanc"),
    ("science", 1, "What is the chemical symbol for gold?", "Au"),
    ("science", 1, "What is the chemical symbol for sodium?", "Na"),
    ("science", 1, "What gas do plants absorb from the air for photosynthesis?", "Carbon dioxide"),
    ("science", 1, "How many planets are in the Solar System?", "8"),
    ("science", 1, "Which planet is known as the Red Planet?", "Mars"),
    ("science", 2, "What is the largest planet in the Solar System?", "Jupiter"),
    ("science", 2, "What is the atomic number of carbon?", "6"),
    ("science", 2, "What is the hardest natural substance?", "Diamond"),
    ("science", 2, "What particle has a negative electric charge?", "Electron"),
    ("science", 2, "What is the boiling point of water at sea level in degrees Celsius?", "100"),
    ("science", 3, "What is the most abundant gas in Earth's atmosphere?", "Nitrogen"),
    ("science", 2, "What organ pumps blood through the human body?", "Heart"),
    ("science", 3, "How many bones are in the adult human body?", "206"),
    ("science", 2, "What is the powerhouse of the cell?", "Mitochondria"),
    ("science", 3, "What is the SI unit of electric resistance?", "Ohm"),
    ("science", 2, "What is the SI unit of force?", "Newton"),
    ("science", 3, "What element has the chemical symbol W?", "Tungsten"),
    ("science", 1, "What is H2O more commonly called?", "Water"),
    ("science", 2, "Which blood type is the universal donor?", "O negative"),
    (
        "science",
        3,
        "What is the speed of light in vacuum, in kilometres per second, rounded?",
        "300000",
    ),
    ("history", 1, "In which year did World War II end?", "1945"),
    ("history", 2, "Who was the first President of the United States?", "George Washington"),
    ("history", 2, "In which year did the Berlin Wall fall?", "1989"),
    ("history", 2, "Which ship sank on its maiden voyage in April 1912?", "Titanic"),
    ("history", 2, "Who was the first person to walk on the Moon?", "Neil Armstrong"),
    ("history", 3, "In which year was the Magna Carta sealed?", "1215"),
    ("history", 2, "Which empire built Machu Picchu?", "Inca"),
    ("history", 3, "Who was the first Emperor of Rome?", "Augustus"),
    ("history", 2, "In which city was the Declaration of Independence signed?", "Philadelphia"),
    ("history", 3, "Which year did the French Revolution begin?", "1789"),
    ("history", 2, "Who painted the ceiling of the Sistine Chapel?", "Michelangelo"),
    ("history", 3, "What was the name of the first artificial satellite?", "Sputnik 1"),
    ("history", 2, "Which country gifted the Statue of Liberty to the United States?", "France"),
    ("history", 3, "Who wrote the Communist Manifesto with Friedrich Engels?", "Karl Marx"),
    ("history", 2, "Which civilisation built the pyramids of Giza?", "Ancient Egyptians"),
    ("literature", 1, "Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("literature", 2, "Who wrote Pride and Prejudice?", "Jane Austen"),
    ("literature", 2, "Who wrote the novel 1984?", "George Orwell"),
    ("literature", 2, "Who wrote One Hundred Years of Solitude?", "Gabriel García Márquez"),
    ("literature", 3, "In which language was Don Quixote first written?", "Spanish"),
    ("literature", 2, "What is the name of Sherlock Holmes's friend and narrator?", "Dr Watson"),
    ("literature", 2, "Who wrote The Odyssey?", "Homer"),
    ("literature", 3, "Who wrote War and Peace?", "Leo Tolstoy"),
    ("literature", 2, "What is the first book of the Hebrew Bible?", "Genesis"),
    ("literature", 3, "Which author created the detective Hercule Poirot?", "Agatha Christie"),
    ("math", 1, "What is 7 times 8?", "56"),
    ("math", 1, "What is 144 divided by 12?", "12"),
    ("math", 1, "What is the square root of 81?", "9"),
    ("math", 2, "What is 15 percent of 200?", "30"),
    ("math", 2, "How many sides does a hexagon have?", "6"),
    ("math", 2, "What is 2 to the power of 10?", "1024"),
    ("math", 2, "What is the sum of the interior angles of a triangle in degrees?", "180"),
    ("math", 3, "What is the smallest prime number greater than 50?", "53"),
    ("math", 2, "What is pi rounded to two decimal places?", "3.14"),
    ("math", 3, "What is 17 squared?", "289"),
    ("math", 1, "What is 1000 minus 1?", "999"),
    ("math", 3, "How many edges does a cube have?", "12"),
    ("math", 2, "What is the next number in the sequence 1, 1, 2, 3, 5, 8?", "13"),
    ("math", 3, "What is 0.25 written as a fraction in lowest terms?", "1/4"),
    ("math", 2, "How many minutes are in a day?", "1440"),
    ("computing", 1, "What does CPU stand for?", "Central Processing Unit"),
    ("computing", 2, "What does HTTP stand for?", "Hypertext Transfer Protocol"),
    ("computing", 1, "What does RAM stand for?", "Random Access Memory"),
    ("computing", 2, "Who created the Python programming language?", "Guido van Rossum"),
    ("computing", 2, "How many bits are in a byte?", "8"),
    ("computing", 3, "What HTTP status code means Too Many Requests?", "429"),
    ("computing", 2, "What HTTP status code means Not Found?", "404"),
    ("computing", 3, "In which year was the first version of Linux released?", "1991"),
    ("computing", 2, "What does JSON stand for?", "JavaScript Object Notation"),
    ("computing", 3, "What is the default port for HTTPS?", "443"),
    ("computing", 2, "Which data structure works first in, first out?", "Queue"),
    (
        "computing",
        3,
        "What does the {} pair denote in a Python format string?",
        "A replacement field",
    ),
    ("food", 1, "What is the main ingredient of guacamole?", "Avocado"),
    ("food", 2, "Which country does the cheese Parmigiano Reggiano come from?", "Italy"),
    ("food", 2, "What spice gives paella its yellow colour?", "Saffron"),
    ("food", 2, "What is tofu made from?", "Soybeans"),
    ("food", 3, "Which nut is used to make marzipan?", "Almond"),
    ("food", 1, "What fruit is dried to make raisins?", "Grapes"),
    ("food", 2, "What is the Japanese dish of raw fish slices called?", "Sashimi"),
    ("food", 3, "What grain is used to make traditional Japanese sake?", "Rice"),
]


def main() -> None:
    assert len(QA) == 100, len(QA)
    table = pa.table(
        {
            "id": pa.array([f"qa-{i + 1:03d}" for i in range(len(QA))], pa.string()),
            "category": pa.array([c for c, _, _, _ in QA], pa.string()),
            "question": pa.array([q for _, _, q, _ in QA], pa.string()),
            "answer": pa.array([a for _, _, _, a in QA], pa.string()),
            "difficulty": pa.array([d for _, d, _, _ in QA], pa.int64()),
        }
    )
    pq.write_table(table, OUT, compression="zstd")
    print(f"wrote {OUT} ({table.num_rows} rows)")


if __name__ == "__main__":
    main()
